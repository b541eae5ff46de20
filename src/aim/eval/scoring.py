"""Answer scoring: turning a model's response into a prediction and a per-sample score, and the benchmark
metrics that are not a mean over samples. Pure functions on strings and record dicts (no model, no files).

Each rule is the one the benchmark's own scorer applies (the source is named at each function):

| answer_format | benchmark       | prediction                                  | per-sample score                     |
|---------------|-----------------|---------------------------------------------|--------------------------------------|
| letter        | multiple choice | the task's letter rule (aim.eval.choices)   | 1 if it is the answer's letter       |
| vqa           | VQA-v2          | the VQA normalisation                       | VQA soft accuracy, lmms-eval's rule  |
| vqa_official  | VQA-v2          | the VQA normalisation                       | VQA soft accuracy, official vqaEval  |
| textvqa       | TextVQA         | the EvalAI answer processor's output        | soft accuracy, both sides processed  |
| exact         | GQA             | lower case, ASCII punctuation removed       | 1 on an exact match                  |
| mme_yes_no    | MME             | "yes" / "no" / "other" (lmms-eval's reader) | 1 if it is the answer                |
| pope_yes_no   | POPE            | "yes" / "no" / "other" (lmms-eval's reader) | 1 if it is the answer                |
| pope_official | POPE            | "yes" / "no" (POPE's evaluate.py)           | 1 if it is the answer                |

Where the benchmark's official scorer and lmms-eval disagree (VQA-v2's handling of the human answers,
POPE's reading of yes / no), lmms-eval's rule is the default, so that numbers stand beside the published
ones that nearly all come from lmms-eval; the official rule is the `*_official` format, chosen by the
dataset's `scorer: official` (aim.data.image_benchmarks).

Benchmark-level metrics over the records: `mme_scores` (acc, acc+ and score per subtask, perception and
cognition sums), `pope_scores` (accuracy, precision, recall, F1 with "yes" as positive, per split),
`circular_accuracy` (MMBench's CircularEval), `vqa_accuracy` (mean soft score, per answer type) and
`mvbench_accuracy` (per task over the answered questions, then the mean over tasks).
"""
from __future__ import annotations

import re
import string
from collections import defaultdict

import numpy as np

ANSWER_FORMATS = ("letter", "vqa", "vqa_official", "textvqa", "exact", "mme_yes_no", "pope_yes_no", "pope_official")
SCORERS = ("lmms_eval", "official")  # whose rule scores VQA-v2 and POPE (a dataset's `scorer`)
LETTER_RE = re.compile(r"\b([A-Z])\b")


def parse_letter(text: str, num_options: int) -> str | None:
    """The first standalone option letter in a generated answer ("B", "(B) red", "answer: B")."""
    allowed = {chr(ord("A") + i) for i in range(num_options)}
    for m in LETTER_RE.finditer(text):
        if m.group(1) in allowed:
            return m.group(1)
    return None


# --- VQA answer normalisation -----------------------------------------------------------------------------
# The rules of the official VQA evaluation (GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEval.py), which the
# EvalAI answer processor (facebookresearch/mmf, used by lmms-eval and LLaVA) repeats:
# - punctuation: each of these characters is deleted when it touches a space anywhere in the answer (or the
#   answer holds a comma between digits), else replaced by a space; then every period not followed by a
#   digit is deleted ("2.5" keeps its period);
# - then lower case, split on white space, number words zero..ten (and "none") become digits, the articles
#   a / an / the are dropped, and apostrophe-less contractions get their apostrophes back.
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
                "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
# The official table restores these contractions from any spelling that lacks exactly one of their
# apostrophes ("couldnt've" and "couldn'tve" -> "couldn't've"). Its capitalised entries (I'm, I've, I'd've)
# never match lower-cased words and are left out; "somebody'd" -> "somebodyd" is the table's own entry.
_CONTRACTED = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd "
    "he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've mustn't must've "
    "needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've somebody'd've "
    "somebody'll somebody's someone'd someone'd've someone'll someone's something'd something'd've something'll "
    "that's there'd there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've "
    "we've weren't what'll what're what's what've when's where'd where's where've who'd who'd've who'll who's "
    "who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've "
    "you'll you're you've"
).split()


def _contractions() -> dict[str, str]:
    table = {}
    for word in _CONTRACTED:
        for i, ch in enumerate(word):
            if ch == "'":
                table[word[:i] + word[i + 1:]] = word
    table["somebody'd"] = "somebodyd"
    return table


CONTRACTIONS = _contractions()


def process_punctuation(text: str) -> str:
    """The official VQA punctuation rule (see above); the checks look at the answer as given."""
    out = text
    digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _PUNCTUATION:
        out = out.replace(p, "" if (p + " " in text or " " + p in text or digit_comma) else " ")
    return _PERIOD.sub("", out)


def process_digits_articles(text: str) -> str:
    """Lower case; number words -> digits; articles dropped; contractions restored; single spaces."""
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def vqa_normalize(answer: str) -> str:
    """An answer as the official VQA evaluation compares it: tabs and newlines to spaces, stripped,
    punctuation, then digits / articles / contractions."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digits_articles(process_punctuation(answer))


def evalai_normalize(answer: str) -> str:
    """The EvalAI answer processor (mmf's EvalAIAnswerProcessor, used by TextVQA's evaluator in LLaVA and
    lmms-eval): lower case, commas and question marks removed, "'s" split off ("man's" -> "man 's"), then
    the VQA normalisation."""
    answer = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return vqa_normalize(answer)


def soft_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA accuracy of one answer against the human answers: min(#humans that said it / 3, 1), averaged over
    the len(answers) subsets that leave one human out (10 choose 9 for VQA's ten answers), as the official
    evaluation computes it. Against ten answers, an answer k humans gave scores 0, 0.3, 0.6, 0.9, 1 for
    k = 0, 1, 2, 3, >= 4 (not k/3). Strings are compared as given: normalise them first."""
    if not answers:
        raise ValueError("soft_accuracy needs at least one human answer")
    matches = sum(a == prediction for a in answers)
    per_subset = [min(1.0, (matches - (a == prediction)) / 3) for a in answers]
    return float(np.mean(per_subset))


def _strip_answer(answer: str) -> str:
    return answer.replace("\n", " ").replace("\t", " ").strip()


def vqa_score(response: str, answers: list[str], rule: str = "lmms_eval") -> tuple[str, float]:
    """VQA-v2 soft accuracy of a response against the human answers. Returns (normalised prediction, soft
    accuracy). Both rules first turn tabs and newlines into spaces and strip every answer and the response.

    - "lmms_eval" (default; lmms_eval/tasks/vqav2/utils.py, vqav2_process_results): the response and every
      human answer get the punctuation and digit / article processing (`vqa_normalize`), always.
    - "official" (GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py at a013f00, 2021): the
      human answers (and the response) are processed only when the answers are not all the same; when
      they agree they are compared as released. The response here is the normalised one, as a submission
      file holds it (lmms-eval's vqav2_test submission and LLaVA's both normalise before writing), so a
      response "Two" against ten "two" scores 0 under this rule and 1 under lmms-eval's.
    """
    check_scorer(rule)
    prediction = vqa_normalize(response)
    answers = [_strip_answer(a) for a in answers]
    if rule == "lmms_eval" or len(set(answers)) > 1:
        answers = [vqa_normalize(a) for a in answers]
    return prediction, soft_accuracy(prediction, answers)


def check_scorer(rule: str) -> None:
    if rule not in SCORERS:
        raise ValueError(f"scorer: {rule!r} is not one of {', '.join(SCORERS)}")


def textvqa_score(response: str, answers: list[str]) -> tuple[str, float]:
    """TextVQA, as its accuracy evaluator (LLaVA's m4c_evaluator.TextVQAAccuracyEvaluator; lmms-eval's
    textvqa process_results) scores it: the EvalAI processor on the response and on every human answer,
    then the soft accuracy. Returns (processed prediction, soft accuracy)."""
    prediction = evalai_normalize(response)
    return prediction, soft_accuracy(prediction, [evalai_normalize(a) for a in answers])


# --- exact match and yes / no --------------------------------------------------------------------------------
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def exact_match_normalize(text: str) -> str:
    """lmms-eval's exact_match with ignore_case and ignore_punctuation (its GQA metric): lower case, every
    ASCII punctuation character removed; surrounding white space stripped."""
    return text.lower().translate(_NO_PUNCTUATION).strip()


def mme_yes_no(response: str) -> str:
    """lmms-eval's MME reader (lmms_eval/tasks/mme/utils.py, parse_pred_ans, "brought from Otter"): the
    response lower-cased, stripped and without periods; "yes" or "no" as is; a single "y" / "n" is yes / no
    (any other single character "other"); else "yes" / "no" if it occurs in the first four characters (yes
    first), else "other". MME's own eval_tool differs only in the single letters and the periods."""
    answer = response.lower().strip().replace(".", "")
    if answer in ("yes", "no"):
        return answer
    if len(answer) == 1:
        return {"y": "yes", "n": "no"}.get(answer, "other")
    head = answer[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def pope_yes_no(response: str) -> str:
    """lmms-eval's POPE reader (lmms_eval/tasks/pope/utils.py, pope_process_results): the response
    lower-cased and stripped is the prediction; only an exact "yes" or "no" counts as one, anything else
    ("yes.", "No, there is not") is "other": wrong, and neither a positive nor a negative in precision and
    recall (`binary_scores` with negative "no")."""
    answer = response.lower().strip()
    return answer if answer in ("yes", "no") else "other"


def pope_official_yes_no(response: str) -> str:
    """POPE's evaluate.py (also LLaVA's eval_pope.py) on the stripped response (LLaVA strips the generated
    text before writing it): keep the text before the first period, drop commas, split on spaces; "No",
    "no" or "not" among the words means "no", anything else "yes" (case-sensitive, as released: "NO"
    counts as yes)."""
    text = response.strip()
    text = text.split(".")[0] if "." in text else text
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "no" in words or "not" in words) else "yes"


def score_response(answer_format: str, response: str, answer: str, answers: list[str], num_options: int = 0,
                   options: list[str] | None = None, letter_reader: str = "first_letter") -> dict:
    """A generated response scored by its benchmark's rule: {"prediction", "correct", "score"}; `score` is
    None where the sample has no reference answer (VQA-v2 test-dev: submitted, not scored here). A letter
    answer is read by the sample's `letter_reader` (aim.eval.choices) over its `options` (without them,
    `num_options` placeholders)."""
    if answer_format == "letter":
        from aim.eval.choices import read_letter

        prediction = read_letter(letter_reader, response, options if options is not None else [""] * num_options)
        hit = float(prediction == answer)
    elif answer_format in ("vqa", "vqa_official", "textvqa"):
        if not answers:
            prediction = evalai_normalize(response) if answer_format == "textvqa" else vqa_normalize(response)
            return {"prediction": prediction, "correct": None, "score": None}
        if answer_format == "textvqa":
            prediction, hit = textvqa_score(response, answers)
        else:
            prediction, hit = vqa_score(response, answers, "official" if answer_format == "vqa_official" else "lmms_eval")
    elif answer_format == "exact":
        prediction = exact_match_normalize(response)
        hit = float(prediction == exact_match_normalize(answer))
    elif answer_format == "mme_yes_no":
        prediction = mme_yes_no(response)
        hit = float(prediction == answer.lower().strip())
    elif answer_format in ("pope_yes_no", "pope_official"):
        prediction = (pope_yes_no if answer_format == "pope_yes_no" else pope_official_yes_no)(response)
        hit = float(prediction == answer.lower().strip())
    else:
        raise ValueError(f"answer_format {answer_format!r} is not one of {', '.join(ANSWER_FORMATS)}")
    # `correct`: full credit (for VQA, an answer that at least four of the ten humans gave)
    return {"prediction": prediction, "correct": hit >= 1.0, "score": hit}


# --- benchmark metrics over records --------------------------------------------------------------------------
MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def vqa_accuracy(records: list[dict]) -> dict:
    """Mean soft score over the scored records, overall and per question type (VQA's answer types)."""
    scored = [r for r in records if r.get("score") is not None]
    by_type: dict[str, list[float]] = defaultdict(list)
    for r in scored:
        by_type[r.get("question_type") or "all"].append(r["score"])
    return {
        "vqa_accuracy": float(np.mean([r["score"] for r in scored])) if scored else float("nan"),
        "num_scored": len(scored),
        "by_type": {k: float(np.mean(v)) for k, v in sorted(by_type.items())},
    }


def mme_scores(records: list[dict]) -> dict:
    """MME (Fu et al., 2023), as its eval_tool computes it: per subtask (`question_type`), acc = the fraction
    of questions answered right and acc+ = the fraction of images (`group`: the two questions of an image)
    with every question right; a subtask's score is acc*100 + acc+*100 (at most 200); perception sums its
    ten subtasks (at most 2000), cognition its four (at most 800); `total` = perception + cognition.
    An image whose questions were skipped (bad image) does not count; one with a single answered question
    counts that question."""
    by_task: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by_task[r["question_type"]][r["group"]].append(bool(r["correct"]))
    subtasks = {}
    for task, images in sorted(by_task.items()):
        hits = [h for answers in images.values() for h in answers]
        acc, acc_plus = float(np.mean(hits)), float(np.mean([all(a) for a in images.values()]))
        subtasks[task] = {"acc": acc, "acc_plus": acc_plus, "score": 100 * acc + 100 * acc_plus,
                          "images": len(images), "questions": len(hits)}
    unknown = set(subtasks) - set(MME_PERCEPTION) - set(MME_COGNITION)
    if unknown:
        raise ValueError(f"MME subtasks {sorted(unknown)} are neither perception nor cognition")
    perception = sum(s["score"] for t, s in subtasks.items() if t in MME_PERCEPTION)
    cognition = sum(s["score"] for t, s in subtasks.items() if t in MME_COGNITION)
    return {"perception": perception, "cognition": cognition, "total": perception + cognition, "subtasks": subtasks}


def binary_scores(predictions: list[str], labels: list[str], positive: str = "yes", negative: str | None = "no") -> dict:
    """Accuracy, precision, recall and F1 of `positive` (POPE: "yes"), and the share of positive predictions;
    a ratio with a zero denominator is 0. A false negative is a `negative` prediction on a positive label
    (lmms-eval's POPE recall: an unreadable "other" answer is no false negative); `negative` None: any
    prediction but the positive one. The two agree when every prediction is positive or negative (POPE's
    own reader)."""
    tp = sum(p == positive and t == positive for p, t in zip(predictions, labels))
    fp = sum(p == positive and t != positive for p, t in zip(predictions, labels))
    fn = sum((p != positive if negative is None else p == negative) and t == positive
             for p, t in zip(predictions, labels))
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": sum(p == t for p, t in zip(predictions, labels)) / n if n else float("nan"),
        "precision": precision, "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": sum(p == positive for p in predictions) / n if n else float("nan"),
        "num_samples": n,
    }


def pope_scores(records: list[dict]) -> dict:
    """POPE (Li et al., EMNLP 2023): per split (`question_type`: adversarial / popular / random) the binary
    scores with "yes" as positive (POPE's evaluate.py; lmms-eval's pope_aggregate_*); `f1` is the mean of
    the splits' F1 (the figure LLaVA-1.5 and the token-reduction papers report), `pooled` the scores over
    all splits together (lmms-eval's `pope` task's figures). `yes_ratio` is the share of "yes" predictions
    (POPE's); lmms-eval's pope_yes_ratio is the share of "yes" labels instead."""
    splits: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        splits[r["question_type"]].append(r)
    per_split = {
        s: binary_scores([r["prediction"] for r in rs], [r["answer"] for r in rs]) for s, rs in sorted(splits.items())
    }
    return {
        "f1": float(np.mean([v["f1"] for v in per_split.values()])) if per_split else float("nan"),
        "accuracy": float(np.mean([v["accuracy"] for v in per_split.values()])) if per_split else float("nan"),
        "splits": per_split,
        "pooled": binary_scores([r["prediction"] for r in records], [r["answer"] for r in records]),
    }


def circular_accuracy(records: list[dict]) -> dict:
    """MMBench's CircularEval (Liu et al., 2023): each question is asked once per circular shift of its
    options (the records of one `group`); it counts as right only if every shift was answered right. Also
    per category (`question_type`). Shifts that were skipped do not count; a group with none answered is
    left out."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["group"]].append(r)
    passed = {g: all(r["correct"] for r in rs) for g, rs in groups.items()}
    by_type: dict[str, list[bool]] = defaultdict(list)
    for g, rs in groups.items():
        by_type[rs[0].get("question_type") or "all"].append(passed[g])
    return {
        "circular_accuracy": float(np.mean(list(passed.values()))) if passed else float("nan"),
        "num_groups": len(passed),
        "by_type": {k: float(np.mean(v)) for k, v in sorted(by_type.items())},
    }


def mvbench_accuracy(records: list[dict]) -> dict:
    """MVBench as lmms-eval aggregates it (lmms_eval/tasks/mvbench/utils.py, mvbench_aggregate_results): per task
    (`question_type`), the correct answers over the *answered* questions, a question whose generated response is
    empty being left out of the denominator (and a task with none answered scoring 0); the headline is the mean
    over the tasks (MVBench's "Avg", every task weighing the same). Empty means empty after stripping white space:
    lmms-eval's llava_onevision, qwen2_vl and InternVL models strip their outputs before the aggregation compares
    them with "". Records of eval.mode letter or likelihood (the response is the best-scored option's letter)
    always count as answered."""
    tasks: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        tasks[r.get("question_type") or "all"].append(r)
    by_type, excluded = {}, {}
    for task, rs in sorted(tasks.items()):
        answered = [r for r in rs if not (isinstance(r.get("response"), str) and not r["response"].strip())]
        by_type[task] = float(np.mean([bool(r["correct"]) for r in answered])) if answered else 0.0
        excluded[task] = len(rs) - len(answered)
    return {
        "mvbench_accuracy": float(np.mean(list(by_type.values()))) if by_type else float("nan"),
        "by_type": by_type,
        "num_excluded": sum(excluded.values()),
        "excluded_by_type": {k: v for k, v in excluded.items() if v},
    }
