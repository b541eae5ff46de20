"""Each benchmark asks its questions in the words lmms-eval's task for it uses, and reads generated answers by
the task's own rule (issue #22).

The expected prompts below are what lmms-eval's `doc_to_text` returns for the fixture question, with the
defaults of the task's yaml (`lmms_eval_specific_kwargs`) and, where the yaml has one for our model, its
model-specific entry. They were written from EvolvingLMMs-Lab/lmms-eval at commit
75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3, from these files (lmms_eval/tasks/...):

  videomme/videomme.yaml, videomme_w_subtitle.yaml, utils.py (videomme_doc_to_text[_subtitle|_qwen3vl])
  mlvu/mlvu_dev.yaml, utils.py (mlvu_doc_to_text)
  egoschema/egoschema_subset.yaml, utils.py (egoschema_doc_to_text)
  nextqa/nextqa_mc_test.yaml, _default_template_yaml, utils.py (nextqa_doc_to_text_mc)
  perceptiontest/val/_default_template_yaml, utils.py (perceptiontest_val_doc_to_text)
  mvbench/mvbench_*.yaml, utils.py (mvbench_doc_to_text)
  vqav2/vqav2_val.yaml, utils.py;  gqa/gqa.yaml, utils.py;  mme/mme.yaml, utils.py;  pope/pope.yaml, utils.py
  textvqa/_default_template_textvqa_yaml, utils.py;  scienceqa/scienceqa_img.yaml, utils.py (sqa_doc_to_text)
  mmbench/_default_template_mmbench_en_yaml, mmbench.yaml, en_utils.py, mmbench_evals.py (create_options_prompt)

The answer-reading table was derived from the same commit's readers (_task_utils/mcq_extract.py,
egoschema/utils.py, nextqa/utils.py, perceptiontest/val/utils.py, mvbench/utils.py mcq_acc,
scienceqa/utils.py sqa_process_results, mmbench/mmbench_evals.py can_infer + the static fallback).
"""
from dataclasses import asdict, replace

import pytest

from aim.data import DATASETS, TOY_PROMPT
from aim.data.subtitles import subtitle_block
from aim.eval.choices import LETTER_READERS, read_letter
from aim.eval.scoring import score_response
from aim.prompts import GENERIC_MC, TaskPrompt

MC = "\nAnswer with the option's letter from the given choices directly."
SHORT = "\nAnswer the question using a single word or phrase."
VIDEOMME_INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video and "
                        "the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")
VIDEOMME_ROW = {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Astronomy",
                "videoID": "vidA", "question_id": "001-1", "task_type": "Counting Problem",
                "question": "How many objects move?", "options": ["A. one", "B. two", "C. three", "D. four"],
                "answer": "B"}

# (dataset, a question-file row in the release's schema, model, lmms-eval's prompt for it)
CASES = [
    ("videomme", VIDEOMME_ROW, "llava_onevision",
     VIDEOMME_INSTRUCTION + "\nHow many objects move?\nA. one\nB. two\nC. three\nD. four\n" + MC),
    ("videomme", VIDEOMME_ROW, "qwen3_vl",  # the yaml's qwen3_vl entry (format qwen3_vl)
     "Question: How many objects move?\nOptions:\nA. one\nB. two\nC. three\nD. four\nAnswer with the option letter only."),
    ("mlvu_dev", {"video_name": "movie101_66.mp4", "duration": 246.0, "_row": 0, "task_type": "plotQA",
                  "question": "What colour is the circle?\n(A) red\n(B) green\n(C) blue\n(D) cyan\n",
                  "candidates": ["red", "green", "blue", "cyan"], "answer": "A", "question_id": "plotQA_0"},
     "llava_onevision",
     "What colour is the circle?\n(A) red\n(B) green\n(C) blue\n(D) cyan\n\nOnly give the best option.\nBest option: ("),
    ("egoschema_subset", {"question_idx": "0", "question": "What does c do?", "video_idx": "v0",
                          "option": ["A. c cooks", "B. c reads", "C. c runs", "D. c sleeps", "E. c sings"], "answer": "1"},
     "llava_onevision", "What does c do?\nA. c cooks\nB. c reads\nC. c runs\nD. c sleeps\nE. c sings" + MC),
    ("nextqa_mc_test", {"video": "4010069381", "qid": 0, "type": "CW", "question": " why did the boy cry ",
                        "answer": 1, "a0": "fell", "a1": "hungry", "a2": "tired ", "a3": "lost", "a4": "scared"},
     "llava_onevision", "why did the boy cry\nA. fell\nB. hungry\nC. tired\nD. lost\nE. scared"),  # no instruction
    ("perceptiontest_val_mc", {"video_name": "video_1", "question_id": "0", "question": "What is the person holding?",
                               "options": ["a cup", "a book", "a phone"], "answer_id": "2", "area": "semantics",
                               "reasoning": "descriptive"},
     "llava_onevision", "What is the person holding?\nA. a cup\nB. a book\nC. a phone" + MC),
    ("mvbench", {"_file": "action_antonym", "_row": 0, "video": "v.mp4",
                 "question": "What is the action performed by the person in the video?",
                 "candidates": ["Not sure", "Scattering something down", "Piling something up"],
                 "answer": "Piling something up"},
     "llava_onevision", "Question:What is the action performed by the person in the video?\nOption:\n(A) Not sure\n"
                        "(B) Scattering something down\n(C) Piling something up\nOnly give the best option.\n"),
    ("vqav2", {"question_id": 1, "question": "What color is the bus?", "answers": [{"answer": "red"}] * 10,
               "multiple_choice_answer": "red", "answer_type": "other", "_file": "f", "_row": 0},
     "llava", "What color is the bus?" + SHORT),
    ("gqa", {"id": "1", "imageId": "n1", "question": "Is the cup on the left?", "answer": "yes",
             "types": {"structural": "verify", "semantic": "rel"}},
     "llava", "Is the cup on the left?" + SHORT),
    ("mme", {"question_id": "x.png", "question": "Is there a dog in this image? Please answer yes or no.",
             "answer": "Yes", "category": "existence", "_group": "existence/x.png", "_n": 0, "_file": "f", "_row": 0},
     "llava", "Is there a dog in this image?" + SHORT),
    ("textvqa_val", {"question_id": 1, "question": "what brand is the phone?", "answers": ["nokia"] * 10,
                     "ocr_tokens": ["nokia", "3310"], "_file": "f", "_row": 0},
     "llava", "What brand is the phone?" + SHORT),
    ("scienceqa_img", {"_index": 0, "choices": ["Ohio", "Iowa", "Utah"], "hint": "The map shows a state.",
                       "question": "Which state is highlighted?", "answer": 0, "subject": "social science",
                       "grade": "grade4", "_file": "f", "_row": 0},
     "llava", "Context: The map shows a state.\nWhich state is highlighted?\nA. Ohio\nB. Iowa\nC. Utah" + MC),
    ("mmbench_en_dev", {"index": 5, "question": "Which is larger?", "hint": "Look at the two shapes.", "A": "circle",
                        "B": "square", "C": None, "D": None, "answer": "A", "category": "c", "L2-category": "l",
                        "_file": "f", "_row": 0},
     "llava_onevision",  # the blank line: its "\n" before a post-prompt that starts with "\n"
     "Look at the two shapes. Which is larger? There are several options:\nA. circle\nB. square\n" + MC),
    ("pope", {"category": "adversarial", "question_id": "1", "question": " Is there a car in the image? ",
              "answer": "yes", "_file": "f", "_row": 0},
     "llava", "Is there a car in the image?" + SHORT),
]


@pytest.fixture(scope="module")
def datasets(benchmark_roots):
    return {name: DATASETS.build(name, root=str(benchmark_roots[name])) for name in benchmark_roots}


def prompt_of(dataset, row, model):
    sample = dataset.make_sample(row)
    return sample.prompt.text(sample.question, sample.options, "letter", model=model)


@pytest.mark.parametrize("name,row,model,expected", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_the_prompt_is_the_one_lmms_evals_task_writes(datasets, name, row, model, expected):
    assert prompt_of(datasets[name], row, model) == expected


def test_every_benchmark_has_its_prompt_pinned():
    assert {c[0] for c in CASES} == {"videomme", "mlvu_dev", "egoschema_subset", "nextqa_mc_test", "perceptiontest_val_mc",
                                     "mvbench", "vqav2", "gqa", "mme", "textvqa_val", "scienceqa_img", "mmbench_en_dev",
                                     "pope"}


def test_videomme_with_subtitles_lists_them_first_and_ends_with_the_best_answer(datasets, benchmark_roots, tmp_path):
    """videomme_doc_to_text_subtitle: "This video's subtitles are listed below: \\n" (trailing space), the lines
    on screen at the sampled frames, then the instruction, question, options and "The best answer is:"."""
    ds = DATASETS.build("videomme_w_subtitle", root=str(benchmark_roots["videomme"]))
    sample = ds.make_sample(VIDEOMME_ROW)
    srt = tmp_path / "vidA.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\n<font color=\"white\" size=\".72c\">red circle</font>\n\n"
                   "2\n00:00:01,000 --> 00:00:02,000\n<font color=\"white\" size=\".72c\">blue square</font>\n")
    task = replace(sample.prompt, context=subtitle_block(srt, [0.5, 1.5]))
    assert task.text(sample.question, sample.options) == (
        "This video's subtitles are listed below: \nred circle\nblue square\n" + VIDEOMME_INSTRUCTION
        + "\nHow many objects move?\nA. one\nB. two\nC. three\nD. four\nThe best answer is:")
    qwen3 = task.text(sample.question, sample.options, model="qwen3_vl")
    assert qwen3.startswith("This video's subtitles are listed below: \nred circle\nblue square\nQuestion: How many")
    missing = subtitle_block(tmp_path / "none.srt", [0.5])
    assert missing == "This video's subtitles are listed below: \nNo subtitles available\n"


def test_textvqa_with_ocr_tokens_lists_them_before_the_post_prompt(benchmark_roots):
    ds = DATASETS.build("textvqa_val", root=str(benchmark_roots["textvqa_val"]), ocr_tokens=True)
    row = dict(CASES[10][1])
    assert prompt_of(ds, row, "llava") == "What brand is the phone?\nReference OCR token: nokia, 3310" + SHORT


def test_a_benchmarks_pre_and_post_prompts_are_config_fields(benchmark_roots):
    ds = DATASETS.build("mlvu_dev", root=str(benchmark_roots["mlvu_dev"]), pre_prompt="Watch.\n", post_prompt="\nGo.")
    assert prompt_of(ds, CASES[2][1], "qwen2_vl") == (
        "Watch.\nWhat colour is the circle?\n(A) red\n(B) green\n(C) blue\n(D) cyan\n\nGo.")


def test_likelihood_scoring_leaves_the_options_out():
    mvbench = DATASETS.get("mvbench").layout
    assert mvbench.text("What happens?", ["a", "b"], "likelihood") == "Question:What happens?"
    assert GENERIC_MC.text("What happens?", ["a", "b"], "likelihood") == "What happens?"


def test_a_model_override_names_only_prompt_fields():
    with pytest.raises(ValueError, match="models.qwen3_vl"):
        TaskPrompt(models={"qwen3_vl": {"post": "x"}})


def test_the_bundled_benchmark_keeps_the_prompt_its_model_was_trained_on(tiny_adapter):
    """synthetic_video's prompt (TOY_PROMPT) inside the bundled model's template: "<s> user <video> <question>
    A <option> B <option> ... answer :", as before the prompts moved to the datasets."""
    assert TOY_PROMPT.text("what colour is the circle ?", ["red", "blue"]) == "what colour is the circle ? A red B blue"
    before, after = tiny_adapter.prompt_text("what colour is the circle ?", ["red", "blue"], task=TOY_PROMPT)
    assert (before, after) == ("<s> user", "what colour is the circle ? A red B blue answer :")


def test_the_adapter_wraps_the_task_text_in_the_chat_template_unchanged(datasets):
    """The task's text goes into the user's turn as is (MVBench's final newline included), after the visual
    input and a newline, in LLaVA-OneVision's Qwen2 conversation (lmms-eval's llava_onevision conv_template
    qwen_1_5)."""
    import torch
    from hydra import compose, initialize_config_dir

    from aim.config import validate
    from aim.models import MODELS
    from aim.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = validate(compose("config", overrides=["model=llava_onevision_tiny"])).model
    torch.manual_seed(0)
    real = {"chat_template": True, "prompt_template": "<video>\n{prompt}"}  # the real checkpoints' presets
    adapter = MODELS.get("llava_onevision").for_prompts(**{**asdict(cfg), **real})
    sample = datasets["mvbench"].make_sample(CASES[6][1])
    assert adapter.prompt_string(sample.question, sample.options, task=sample.prompt) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<video>\n" + CASES[6][3]
        + "<|im_end|>\n<|im_start|>assistant\n")


# --- reading generated answers ----------------------------------------------------------------------------------
OPTIONS4 = ["red", "green", "blue", "yellow"]
OPTIONS5 = OPTIONS4 + ["cyan"]
RANDOM = "one at random"
# response -> the letters lmms-eval scores as right, per rule (4 options; EgoSchema and NExT-QA 5). "b" reads as
# nothing for the shared extractor (case-sensitive), as B for MVBench and ScienceQA; MMBench's can_infer finds
# "green" as the option's text; ScienceQA credits only a bare letter or "X." at the start.
TABLE = {
    #                                    mcq  egoschema nextqa perceptiontest mvbench scienceqa mmbench
    "(B)":                              ("B", "B", "B", "B", "B", "", "B"),
    "The answer is C.":                 ("C", "C", "C", "C", "C", "", "C"),
    "b":                                ("", RANDOM, RANDOM, "", "B", "B", ""),
    "C.\n":                             ("C", "C", "C", "C", "C", "C", "C"),
    "none":                             ("", RANDOM, RANDOM, "", "", "", ""),
    " A ":                              ("A", "A", "A", "A", "A", "A", "A"),
    "I think the answer is (D) yellow": ("D", "D", "D", "D", "D", "", "D"),
    "C) blue":                          ("C", RANDOM, RANDOM, "C", "C", "", "C"),
    "answer: B":                        ("B", "B", "B", "B", "B", "", "B"),
    "Option A is wrong, B is right":    ("B", "A", "B", "A", "A", "", "B"),
    "":                                 ("", RANDOM, RANDOM, "", "", "", ""),
    "E":                                ("", "E", "E", "", "", "", ""),
    "The best answer is A":             ("A", "A", "A", "A", "A", "", "A"),
    "green":                            ("", RANDOM, RANDOM, "", "", "", "B"),
}
RULES = ("mcq", "egoschema", "nextqa", "perceptiontest", "mvbench", "scienceqa", "mmbench")


def credited(rule, response):
    options = OPTIONS5 if rule in ("egoschema", "nextqa") else OPTIONS4
    return {letter for letter in "ABCDE"[: len(options)]
            if score_response("letter", response, letter, [], len(options), options, rule)["correct"]}


@pytest.mark.parametrize("response", list(TABLE))
@pytest.mark.parametrize("rule", RULES)
def test_answers_are_read_as_lmms_eval_reads_them(rule, response):
    expected = TABLE[response][RULES.index(rule)]
    if expected == RANDOM:  # lmms-eval draws a letter; here the draw is seeded by the response
        assert len(credited(rule, response)) == 1 and credited(rule, response) == credited(rule, response)
    else:
        assert credited(rule, response) == set(expected)


# MMBench's rule path, on options whose texts overlap ("a cat", "a dog", "cat"): what lmms-eval's static evaluation
# reads (mmbench_evals.py MMBench_Evaluator.prefetch_answer = can_infer, else _task_utils/mcq_extract.py
# extract_mcq_answer over the present options' letters), from running that code at the commit above on each response.
MMBENCH_OPTIONS = ["a cat", "a dog", "cat"]
MMBENCH_AWKWARD = {
    "A dog is on the left": "B",  # "A" in a longer response may be the article: not a letter; the text "a dog" is
    "A cat sits on a mat": "A",  # two option texts ("a cat", "cat") match: the extractor's letter opening the response
    "B, C": "C",  # the one bare letter among the words
    ":C": "C",
    "The answer is (B).": "B",  # "(B)." is one of can_infer's marks
    "cat": "C",
    "A or B": "A",
    "C is correct, not A": "C",
    "option b": None,  # no upper-case letter, no option text
    "I choose B": "B",
    "Failed to obtain answer via API: B": "B",  # can_infer refuses it; the extractor reads B
}


@pytest.mark.parametrize("response", list(MMBENCH_AWKWARD))
def test_mmbench_reads_as_lmms_evals_static_rule_path(response):
    assert read_letter("mmbench", response, MMBENCH_OPTIONS) == MMBENCH_AWKWARD[response]


def test_each_benchmark_names_the_reader_of_its_task(datasets):
    readers = {name: ds.samples[0].letter_reader for name, ds in datasets.items() if ds.samples}
    assert {k: v for k, v in readers.items() if k not in ("vqav2", "gqa", "mme", "textvqa_val", "pope")} == {
        "videomme": "mcq", "videomme_w_subtitle": "mcq", "mlvu_dev": "mcq", "egoschema_subset": "egoschema", "nextqa_mc_test": "nextqa",
        "perceptiontest_val_mc": "perceptiontest", "mvbench": "mvbench", "scienceqa_img": "scienceqa",
        "mmbench_en_dev": "mmbench"}
    assert set(readers.values()) <= set(LETTER_READERS)


def test_an_unknown_reader_is_an_error():
    with pytest.raises(ValueError, match="letter_reader 'guess'"):
        read_letter("guess", "A", OPTIONS4)


# A Qwen2-style text-only template, written for this test: the system turn only when one is given.
QWEN_STYLE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_a_system_prompt_opens_the_conversation_as_lmms_evals_qwen_models_send_it(tiny_adapter, tmp_path):
    """lmms-eval's qwen2_vl / qwen2_5_vl / qwen3_vl classes send a system turn "You are a helpful assistant."
    (Qwen3-VL's template has no default one): `model.system_prompt` in those presets."""
    from aim.models.llava_onevision import LlavaOnevisionConfig

    tok = tiny_adapter.tokenizer
    tok.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").write_text(QWEN_STYLE)
    cfg = LlavaOnevisionConfig(pretrained=str(tmp_path), random_init=True, chat_template=True,
                               prompt_template="<video>\n{prompt}", system_prompt="You are a helpful assistant.")
    ad = type(tiny_adapter)(tiny_adapter.model, tok, cfg)
    before, after = ad.prompt_text("what colour is the circle ?", ["red", "blue"])
    assert before == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    assert after == "\n" + GENERIC_MC.text("what colour is the circle ?", ["red", "blue"]) + (
        "<|im_end|>\n<|im_start|>assistant\n")
    none = type(tiny_adapter)(tiny_adapter.model, tok, replace(cfg, system_prompt=None))
    assert none.prompt_text("what colour is the circle ?", ["red", "blue"])[0] == "<|im_start|>user\n"


@pytest.mark.parametrize("preset", ["qwen2_vl_7b", "qwen2_5_vl_7b", "qwen3_vl_8b"])
def test_the_qwen_presets_send_lmms_evals_system_prompt(preset):
    from hydra import compose, initialize_config_dir

    from aim.config import validate
    from aim.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = validate(compose("config", overrides=[f"model={preset}", "pruner=none"])).model
    assert cfg.system_prompt == "You are a helpful assistant."


def test_a_generated_answer_is_read_by_its_benchmarks_rule(datasets):
    """eval.mode=generate reads "b" as B on ScienceQA (its rule takes a lone letter in any case) and as nothing
    on Video-MME (the shared extractor is case-sensitive)."""
    from aim.eval.loop import predict

    sqa = datasets["scienceqa_img"].samples[0]
    vmme = datasets["videomme"].samples[0]
    assert predict(None, sqa, "generate", response="b")["prediction"] == "B"
    assert predict(None, vmme, "generate", response="b")["prediction"] is None
    assert predict(None, vmme, "generate", response="The best answer is C")["prediction"] == "C"


def test_a_prompt_template_without_the_task_text_is_a_config_error():
    """The layout of the question and options moved to the dataset: an old template spelling them is refused."""
    from aim.models.llava_onevision import LlavaOnevisionConfig

    with pytest.raises(ValueError, match=r"prompt_template: must contain the task's text \{prompt\} once"):
        LlavaOnevisionConfig(random_init=True, prompt_template="<video>\n{question}\n{options}")
