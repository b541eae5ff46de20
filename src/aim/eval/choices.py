"""Reading the option letter out of a generated answer, by each benchmark's own rule as lmms-eval applies it.

A multiple-choice sample names its rule (`Sample.letter_reader`); `read_letter(rule, response, options)` gives
the letter read (None: none). The rules, restated from EvolvingLMMs-Lab/lmms-eval at
75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3 (the file each follows is named at its function):

| rule           | benchmarks (lmms-eval task)           | what it reads                                          |
|----------------|---------------------------------------|--------------------------------------------------------|
| first_letter   | video_mcq, image_mcq, synthetic_video | aim's own: the first standalone option letter          |
| mcq            | videomme, mlvu_dev                    | the shared extractor (_task_utils/mcq_extract.py)      |
| egoschema      | egoschema_subset                      | its MMMU-style parser, first match                     |
| nextqa         | nextqa_mc_test                        | its MMMU-style parser, last match                      |
| perceptiontest | perceptiontest_val_mc                 | the first standalone A-D                               |
| mvbench        | mvbench                               | its mcq_acc normalisation                              |
| scienceqa      | scienceqa_img                         | the letter alone, or "X." at the start (LLaVA's)       |
| mmbench        | mmbench_en_dev                        | MMBench's can_infer, then the shared extractor         |

The two MMMU-style parsers pick an option at random when nothing matches; here that choice is drawn from a
generator seeded by the response, so a rerun reads the same letter (lmms-eval's draws are unseeded).
Where a rule reads a letter beyond the question's options (lmms-eval's lists are fixed, e.g. A-D), the letter
is returned as read: it is never the answer, as in lmms-eval.
"""
from __future__ import annotations

import random
import re

LETTERS = "ABCDEFGHIJ"
_STANDALONE = re.compile(r"\b([A-Z])\b")


def first_letter(response: str, options: list[str]) -> str | None:
    """The first standalone option letter ("B", "(B) red", "answer: B")."""
    allowed = set(LETTERS[: len(options)])
    return next((m.group(1) for m in _STANDALONE.finditer(response) if m.group(1) in allowed), None)


def _strip_marks(text: str, marks: str) -> str:
    """The response with these marks stripped from both ends, one mark after the other (as the parsers do)."""
    for mark in marks:
        text = text.strip(mark)
    return text


# --- lmms-eval's shared extractor (lmms_eval/tasks/_task_utils/mcq_extract.py, extract_mcq_answer) -------------
# The answer phrases it looks for, lower case; a choice letter anywhere after one counts.
ANSWER_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is", "best answer is",
    "the correct option is", "correct option is", "the best option is", "best option is", "the choice is", "choice is",
    "the correct choice is", "correct choice is", "i choose", "i select", "i pick", "my answer is", "my choice is",
    "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)
# each way of writing a letter, with its rank: a higher rank wins, then the later position
_MARKED = (("({})", 6), ("{}.", 5), ("{}:", 4), ("{})", 3), ("{} ", 2))
START, END, PHRASE, ANYWHERE = 10, 9, 7, 0


def lmms_mcq(response: str, choices: str) -> str | None:
    """lmms-eval's shared multiple-choice extractor: every way a choice letter is written in the response
    (stripped of , . ! ? ; : ' " at its ends, padded with a space) is a candidate: "(B)" ranks 6, "B." 5, "B:" 4,
    "B)" 3, "B " 2 (each at its last occurrence); a letter after an answer phrase ("the answer is") 7; a
    standalone letter opening the response 10, ending it 9; only when there is no candidate, any occurrence of a
    letter (0). The highest rank wins, then the later position. Case-sensitive: "b" reads as nothing."""
    if not response or not response.strip():
        return None
    text = " " + _strip_marks(response.strip(), ",.!?;:'\"") + " "
    found = []  # (rank, position, letter)
    for pattern, rank in _MARKED:
        for letter in choices:
            if pattern.format(letter) in text:
                found.append((rank, text.rfind(pattern.format(letter)), letter))
    lower = text.lower()
    for phrase in ANSWER_PHRASES:
        at = lower.find(phrase)
        if at != -1:
            for letter in choices:
                pos = text.find(letter, at + len(phrase))
                if pos != -1:
                    found.append((PHRASE, pos, letter))
    core = text.strip()
    for letter in choices:
        if core.startswith(letter) and (len(core) == 1 or not core[1].isalpha()):
            found.append((START, 0, letter))
        if core.endswith(letter) and (len(core) == 1 or not core[-2].isalpha()):
            found.append((END, len(text) - 1, letter))
    if not found:
        found = [(ANYWHERE, text.rfind(letter), letter) for letter in choices if letter in text]
    return max(found, key=lambda c: (c[0], c[1]))[2] if found else None


# --- the MMMU-style parsers -----------------------------------------------------------------------------------
def _random_letter(response: str, letters: str) -> str:
    return random.Random(response).choice(letters)


def egoschema_parser(response: str, options: list[str]) -> str:
    """EgoSchema's parser (lmms_eval/tasks/egoschema/utils.py, parse_multi_choice_response, after MMMU's): the
    response stripped of , . ! ? ; : ' at its ends and padded with spaces; candidates are every "(X)", then every
    "X ", then every "X." written in it; with none and more than five words, every option whose text (as
    released, "A. <text>") the response contains. Of several, the one whose last occurrence comes first; with
    none, a letter at random."""
    letters = LETTERS[: len(options)]
    text = " " + _strip_marks(response, ",.!?;:'") + " "
    candidates = [p.format(x) for p in ("({})", "{} ", "{}.") for x in letters if p.format(x) in text]
    released = {x: f"{x}. {o}".strip().lower() for x, o in zip(letters, options)}
    by_letter = True
    if not candidates and len(text.split()) > 5:
        candidates = [x for x in letters if released[x] in text.lower()]
        by_letter = False
    if not candidates:
        return _random_letter(response, letters)
    starts = [text.rfind(c) if by_letter else text.lower().rfind(released[c]) for c in candidates]
    chosen = candidates[starts.index(min(starts))]
    return chosen.replace("(", "").replace(")", "").replace(".", "").strip()


def nextqa_parser(response: str, options: list[str]) -> str:
    """NExT-QA's parser (lmms_eval/tasks/nextqa/utils.py, parse_multi_choice_response): the response stripped of
    , . ! ? ; : ' at its ends and padded with spaces; candidates are the letters written "(X)"; if none, "X ";
    if none, "X."; if none and more than five words, the options whose text the response contains. Of several,
    the one that occurs last ("(X)", else " X ", else the option's text); with none, a letter at random."""
    letters = LETTERS[: len(options)]
    text = " " + _strip_marks(response, ",.!?;:'") + " "
    candidates, bracketed, by_letter = [], False, True
    for pattern in ("({})", "{} ", "{}."):
        candidates = [x for x in letters if pattern.format(x) in text]
        if candidates:
            bracketed = pattern == "({})"
            break
    if not candidates and len(text.split()) > 5:
        candidates = [x for x, o in zip(letters, options) if o.strip().lower() in text.lower()]
        by_letter = False
    if not candidates:
        return _random_letter(response, letters)
    if len(candidates) == 1:
        return candidates[0]
    if not by_letter:
        ends = [text.lower().rfind(options[letters.index(x)].strip().lower()) for x in candidates]
    else:
        ends = [text.rfind(f"({x})" if bracketed else f" {x} ") for x in candidates]
    return candidates[ends.index(max(ends))]


# --- the other tasks' own rules -------------------------------------------------------------------------------
_A_TO_D = re.compile(r"\b([A-D])\b")


def perceptiontest_reader(response: str, options: list[str]) -> str | None:
    """Perception Test (lmms_eval/tasks/perceptiontest/val/utils.py, process_results_mc): the first standalone
    A, B, C or D of the stripped response (case-sensitive)."""
    m = _A_TO_D.search(response.strip())
    return m.group(1) if m else None


_MVBENCH_OPTION = re.compile(r"^([A-E])\.\s*(.+)$", re.IGNORECASE)
_MVBENCH_LETTER = re.compile(r"\b([A-E])\b", re.IGNORECASE)
_MVBENCH_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?",
                  "!")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"\.(?!\d)")


def mvbench_reader(response: str, options: list[str]) -> str | None:
    """MVBench (lmms_eval/tasks/mvbench/utils.py, mcq_acc's `process`): "X. ..." at the start gives X (any case);
    otherwise, newlines and tabs to spaces, VQA-style punctuation (each mark dropped where it touches a space or
    the text has a digit,digit, else a space; at most 32 periods not before a digit dropped), quotes and
    parentheses stripped at the ends, lower case, and the first standalone a-e, upper-cased."""
    m = _MVBENCH_OPTION.match(response.strip())
    if m:
        return m.group(1).upper()
    text = response.replace("\n", " ").replace("\t", " ").strip()
    out, digit_comma = text, _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _MVBENCH_PUNCT:
        out = out.replace(p, "" if (p + " " in text or " " + p in text or digit_comma) else " ")
    out = _PERIOD.sub("", out, count=32)
    out = out.strip("'").strip('"').strip(")").strip("(").strip().lower()
    m = _MVBENCH_LETTER.search(out)
    return m.group(1).upper() if m else None


def scienceqa_reader(response: str, options: list[str]) -> str | None:
    """ScienceQA (lmms_eval/tasks/scienceqa/utils.py, sqa_process_results, "how llava parses it"): the stripped
    response when it is one character (any case: "b" is B), else its first character when that is upper case and
    followed by "." ("C. red"); nothing else counts."""
    pred = response.strip()
    if len(pred) == 1:
        return pred.upper()
    if len(pred) >= 2 and pred[0].isupper() and pred[1] == ".":
        return pred[0]
    return None


_MMBENCH_MARKS = (("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."), (":", ""), (":", ","),
                  (":", "."), (":", ")"), (":", ")."))


def mmbench_option(response: str) -> str | None:
    """MMBench's can_infer_option (lmms_eval/tasks/mmbench/mmbench_evals.py), over the letters A-E and the
    response's words: exactly one bare letter among the words gives it (unless "A" is a word of a response of
    more than three words: "A" may be the article); else, for each way of marking a letter ("B.", "(B)", ":B"
    ...), exactly one word so marked gives it."""
    choices = "ABCDE"
    if "Failed to obtain answer via API" in response:
        return None
    words = [w.strip() for w in response.split()]
    count = lambda pre, suf: sum(pre + c + suf in words for c in choices)  # noqa: E731
    if count("", "") == 1:
        for c in choices:
            if "A" in words and len(words) > 3:
                break
            if c in words:
                return c
    for pre, suf in _MMBENCH_MARKS:
        if count(pre, suf) == 1:
            return next(c for c in choices if pre + c + suf in words)
    return None


def mmbench_reader(response: str, options: list[str]) -> str | None:
    """MMBench as lmms-eval's static evaluation reads it (mmbench_evals.py eval_sub_data, static_only): the
    stripped response through can_infer (`mmbench_option`, else the one option whose text it contains), else the
    shared extractor over the question's letters."""
    response = response.strip()
    letters = LETTERS[: len(options)]
    found = mmbench_option(response)
    if found:
        return found
    containing = [x for x, o in zip(letters, options) if str(o).lower() in response.lower()]
    if len(containing) == 1:
        return containing[0]
    return lmms_mcq(response, letters)


LETTER_READERS = {
    "first_letter": first_letter,
    "mcq": lambda response, options: lmms_mcq(response, LETTERS[: len(options)]),
    "egoschema": egoschema_parser,
    "nextqa": nextqa_parser,
    "perceptiontest": perceptiontest_reader,
    "mvbench": mvbench_reader,
    "scienceqa": scienceqa_reader,
    "mmbench": mmbench_reader,
}


def read_letter(rule: str, response: str, options: list[str]) -> str | None:
    """The option letter a generated response gives by the benchmark's rule (LETTER_READERS), None if none."""
    if rule not in LETTER_READERS:
        raise ValueError(f"letter_reader {rule!r} is not one of {', '.join(LETTER_READERS)}")
    return LETTER_READERS[rule](response or "", list(options))
