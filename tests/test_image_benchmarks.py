"""The paper's image benchmarks are read in their Hugging Face release layouts (as lmms-eval's tasks read
them), fail early without their data, skip and count bad images, and are summarised by each benchmark's
own metric; every one runs loader -> LLaVA-1.5 (tiny) -> merger -> pruner -> scorer -> summary."""
import io
import json
from dataclasses import asdict

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from aim.config import ConfigError, validate
from aim.data import DATASETS
from aim.data.image_benchmarks import circular_shift
from aim.data.image_source import ImageDecodeError
from aim.eval import scoring
from aim.paths import CONF_DIR
from aim.tracking.results import summarize
from tests import image_benchmark_fixtures as fx
from tests.benchmark_fixtures import evaluated_once
from tests.in_process import run_in_process
from tests.tiny_models import build

FREE_FORM = {"vqav2", "gqa", "mme", "textvqa_val", "pope"}
MULTIPLE_CHOICE = {"scienceqa_img", "mmbench_en_dev"}
BENCHMARKS = sorted(FREE_FORM | MULTIPLE_CHOICE)
SKIPPED = {  # the fixture's questions whose image is broken or missing
    "vqav2": ["1004", "1005"], "gqa": ["20968379", "201735451"],
    "mme": ["code_reasoning/0099.png#0", "code_reasoning/0099.png#1"], "textvqa_val": ["34604"],
    "scienceqa_img": ["2", "3"], "mmbench_en_dev": ["2", "1000002"], "pope": ["random_3"],
}
RELEASES = {"vqav2": "lmms-lab/VQAv2", "gqa": "lmms-lab/GQA", "mme": "lmms-lab/MME", "textvqa_val": "lmms-lab/textvqa",
            "scienceqa_img": "lmms-lab/ScienceQA", "mmbench_en_dev": "lmms-lab/MMBench", "pope": "lmms-lab/POPE"}
METRIC = {"vqav2": "vqa_accuracy", "gqa": "accuracy", "mme": "mme_score", "textvqa_val": "vqa_accuracy",
          "scienceqa_img": "accuracy", "mmbench_en_dev": "circular_accuracy", "pope": "pope_f1"}
SHORT = "\nAnswer the question using a single word or phrase."


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def mode_of(name):
    return "generate" if name in FREE_FORM else "letter"


def asked(sample) -> str:
    """The text the sample is asked with: its question in its benchmark's prompt layout (aim.prompts)."""
    return sample.prompt.text(sample.question, sample.options)


def load(name, root, *overrides):
    valid = validate(composed(f"dataset={name}", f"dataset.root={root}", f"eval.mode={mode_of(name)}", *overrides))
    return valid, DATASETS.build(valid.dataset.name, **asdict(valid.dataset))


def by_id(dataset):
    return {s.id: s for s in dataset}


def red(sample):
    image, _ = sample.load()
    return int(image[0, 0, 0, 0])


# --- each release's layout ---------------------------------------------------------------------------------
def test_vqav2_reads_ten_answers_and_finds_images_across_row_groups(benchmark_roots):
    valid, ds = load("vqav2", benchmark_roots["vqav2"])
    assert valid.dataset.metric == "vqa_accuracy" and valid.dataset.num_frames == 1
    s = by_id(ds)
    assert list(s) == ["1001", "1002", "1003", "1004", "1005"]
    q = s["1001"]
    assert asked(q) == "How many dogs are there?" + SHORT and q.options == [] and q.answer_format == "vqa"
    assert q.answers == ["2", "2", "2", "2", "two", "2", "3", "2", "2", "2"] and q.answer == "2"
    assert q.question_type == "number" and q.modality == "image"
    image, _ = q.load()
    assert image.shape == (1, fx.SIZE, fx.SIZE + 8, 3) and image.dtype == np.uint8
    assert red(q) == 40 and abs(red(s["1002"]) - 80) <= 3  # row group 0; JPEG in row group 0
    grey = s["1003"].load()[0]  # row group 1, a grey ("L") PNG: three equal channels
    assert (grey[0, 0, 0] == grey[0, 0, 0, 0]).all()


def test_vqav2_test_dev_questions_load_without_answers(benchmark_roots):
    _, ds = load("vqav2", benchmark_roots["vqav2"], "dataset.questions_file=data/testdev-*.parquet")
    assert [(s.id, s.answers, s.answer) for s in ds] == [("2001", [], ""), ("2002", [], "")]


def test_gqa_joins_questions_to_the_image_files_by_image_id(benchmark_roots):
    _, ds = load("gqa", benchmark_roots["gqa"])
    s = by_id(ds)
    assert s["201307251"].answer == "no" and s["201307251"].answer_format == "exact"
    assert asked(s["201307251"]) == "Is it overcast?" + SHORT
    assert (s["201307251"].question_type, s["201307251"].categories) == ("verify", {"semantic": "global"})
    assert abs(red(s["201307251"]) - 40) <= 3 and red(s["202225914"]) == red(s["201307251"])  # same imageId
    assert red(s["201640614"]) == 80  # an RGBA PNG, decoded to RGB
    with pytest.raises(ImageDecodeError, match="missing image n999999"):
        s["20968379"].load()


def test_mme_pairs_the_two_questions_of_an_image_and_swaps_the_instruction(benchmark_roots):
    valid, ds = load("mme", benchmark_roots["mme"])
    assert valid.dataset.metric == "mme_score"
    s = by_id(ds)
    first = s["existence/000000006040.jpg#0"]
    assert asked(first) == "Is there a train in this image?" + SHORT and first.answer == "yes"
    assert s["existence/000000006040.jpg#1"].answer == "no"
    assert first.group == s["existence/000000006040.jpg#1"].group == "existence/000000006040.jpg"
    assert (first.question_type, first.categories) == ("existence", {"task": "perception"})
    assert s["code_reasoning/0020.png#0"].categories == {"task": "cognition"}
    palette = s["code_reasoning/0020.png#0"].load()[0]  # a palette PNG: RGB as PIL converts it
    assert (palette[0] == np.asarray(Image.open(io.BytesIO(fx.encoded(3, "PNG", "P"))).convert("RGB"))).all()
    _, kept = load("mme", benchmark_roots["mme"], "dataset.post_prompt=")
    assert asked(by_id(kept)["existence/000000006040.jpg#0"]) == "Is there a train in this image? Please answer yes or no."


def test_textvqa_capitalises_the_question_and_adds_ocr_tokens_only_when_asked(benchmark_roots):
    _, ds = load("textvqa_val", benchmark_roots["textvqa_val"])
    q = by_id(ds)["34602"]
    assert asked(q) == "What is the brand of this camera?" + SHORT and q.answer_format == "textvqa"
    assert len(q.answers) == 10 and q.answer == "dakota"  # the most frequent answer
    _, ocr = load("textvqa_val", benchmark_roots["textvqa_val"], "dataset.ocr_tokens=true")
    assert asked(by_id(ocr)["34602"]) == (
        "What is the brand of this camera?\nReference OCR token: DAKOTA, DIGITAL" + SHORT)


def test_scienceqa_puts_the_hint_as_context_and_turns_the_answer_index_into_a_letter(benchmark_roots):
    valid, ds = load("scienceqa_img", benchmark_roots["scienceqa_img"])
    assert valid.dataset.metric == "accuracy" and valid.dataset.post_prompt == (
        "\nAnswer with the option's letter from the given choices directly.")  # lmms-eval's scienceqa_img.yaml
    s = by_id(ds)
    assert list(s) == ["0", "1", "2", "3"]  # the release has no ids: positions in the split
    assert s["1"].question == ("Context: Tree frogs live in rain forests.\n"
                               "Which animal's feet are also adapted for sticking to smooth surfaces?")
    assert s["0"].question == "Which of these states is farthest north?"  # no hint, no context line
    assert [x.answer for x in ds] == ["A", "A", "C", "A"] and s["2"].options == ["past", "present", "future"]
    assert [(x.question_type, x.categories["grade"]) for x in ds][:3] == [
        ("social science", "G1-6"), ("natural science", "G1-6"), ("language science", "G7-12")]
    with pytest.raises(ImageDecodeError, match="missing image"):
        s["2"].load()


def test_mmbench_groups_the_circular_shifts_of_a_question(benchmark_roots):
    valid, ds = load("mmbench_en_dev", benchmark_roots["mmbench_en_dev"])
    assert valid.dataset.metric == "circular_accuracy"
    s = by_id(ds)
    assert list(s) == ["0", "1000000", "2000000", "3000000", "1", "1000001", "2", "1000002"]
    assert {x.group for x in ds} == {"0", "1", "2"} and s["3000000"].group == "0"
    assert s["0"].options == ["red", "green", "blue", "white"] and s["0"].answer == "C"
    assert s["1000000"].options == ["green", "blue", "white", "red"] and s["1000000"].answer == "B"
    assert s["1"].options == ["yes", "no"]  # C and D are empty: two options
    assert asked(s["1"]) == ("The boy got a present. Is the boy happy? There are several options:\nA. yes\nB. no\n\n"
                             "Answer with the option's letter from the given choices directly.")
    assert asked(s["0"]).startswith("What is the color of the ball? There are several options:\nA. red\n")  # no hint
    assert (s["0"].question_type, s["0"].categories) == (
        "attribute_recognition", {"l2_category": "finegrained_perception (instance-level)"})


def test_mmbench_makes_the_shifts_the_release_would_hold_when_it_has_none(tmp_path, benchmark_roots):
    root = tmp_path / "mmbench"
    fx.write(root / "en" / "dev-00000-of-00001.parquet", fx.mmbench_rows(with_shifts=False), fx.MMBENCH_SCHEMA)
    _, made = load("mmbench_en_dev", root)
    _, released = load("mmbench_en_dev", benchmark_roots["mmbench_en_dev"])

    def key(ds):
        return sorted((x.id, x.group, tuple(x.options), x.answer) for x in ds)

    assert key(made) == key(released)
    _, plain = load("mmbench_en_dev", root, "dataset.make_shifts=false")
    assert [x.id for x in plain] == ["0", "1", "2"]


def test_circular_shift_moves_the_answer_with_its_option():
    assert circular_shift(["a", "b", "c", "d"], "C", 1) == (["b", "c", "d", "a"], "B")
    assert circular_shift(["a", "b", "c", "d"], "A", 3) == (["d", "a", "b", "c"], "B")


def test_pope_reads_its_three_splits_with_ids_unique_across_them(benchmark_roots):
    valid, ds = load("pope", benchmark_roots["pope"])
    assert valid.dataset.metric == "pope_f1"
    assert [x.id for x in ds] == ["adversarial_1", "adversarial_2", "popular_1", "popular_2", "random_1", "random_2",
                                  "random_3"]
    q = by_id(ds)["popular_2"]
    assert (asked(q), q.answer, q.question_type) == ("Is there a dog in the image?" + SHORT, "no", "popular")
    _, one = load("pope", benchmark_roots["pope"], "dataset.splits=[random]", "dataset.limit=2")
    assert [x.id for x in one] == ["random_1", "random_2"]  # limit counts the chosen split's questions


def test_limit_keeps_the_first_questions(benchmark_roots):
    _, ds = load("vqav2", benchmark_roots["vqav2"], "dataset.limit=3")
    assert [s.id for s in ds] == ["1001", "1002", "1003"]


def test_an_undecodable_image_raises_the_error_the_loop_skips(benchmark_roots):
    from aim.data import VideoDecodeError

    _, ds = load("textvqa_val", benchmark_roots["textvqa_val"])
    with pytest.raises(VideoDecodeError, match="cannot decode image .*not an image file"):
        by_id(ds)["34604"].load()


# --- configs fail early -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BENCHMARKS)
def test_a_missing_root_fails_validation_saying_what_to_download_and_where(name, tmp_path):
    root = tmp_path / "nothing_here"
    with pytest.raises(ConfigError) as err:
        validate(composed(f"dataset={name}", f"dataset.root={root}", f"eval.mode={mode_of(name)}"))
    message = str(err.value)
    assert message.startswith("dataset.root: ")
    assert f"hf download {RELEASES[name]} --repo-type dataset --include" in message and str(root) in message


def test_gqa_without_its_image_files_fails_validation(tmp_path, benchmark_roots):
    import shutil

    root = tmp_path / "gqa"
    shutil.copytree(benchmark_roots["gqa"] / "testdev_balanced_instructions", root / "testdev_balanced_instructions")
    with pytest.raises(ConfigError, match=r"dataset.root: no testdev_balanced_images/testdev-\*.parquet .*images are missing"):
        validate(composed("dataset=gqa", f"dataset.root={root}", "eval.mode=generate"))


@pytest.mark.parametrize("name", sorted(FREE_FORM))
def test_free_form_benchmarks_need_generated_answers(name, benchmark_roots):
    with pytest.raises(ConfigError, match=f"eval.mode: dataset {name} scores generated free-form answers; "
                                          "use eval.mode=generate, got letter"):
        validate(composed(f"dataset={name}", f"dataset.root={benchmark_roots[name]}", "eval.mode=letter"))


@pytest.mark.parametrize("override,message", [
    ("dataset.num_frames=4", r"dataset.num_frames: an image benchmark gives one image per sample; must be 1, got 4"),
    ("dataset.splits=[hard]", r"dataset.splits: 'hard' is not allowed; choose one of: adversarial, popular, random"),
    ("dataset.metric=bleu", r"dataset.metric: 'bleu' is not allowed"),
])
def test_bad_image_benchmark_fields_fail_validation(override, message, benchmark_roots):
    with pytest.raises(ConfigError, match=message):
        validate(composed("dataset=pope", f"dataset.root={benchmark_roots['pope']}", "eval.mode=generate", override))


def test_the_loop_refuses_free_form_samples_outside_generate_mode(benchmark_roots, llava_tiny, tmp_path):
    from aim.eval import evaluate
    from aim.merging import NoMerge
    from aim.pruning import NoPrune
    from aim.tracking.records import SampleRecords

    _, ds = load("pope", benchmark_roots["pope"])
    records = SampleRecords(tmp_path / "s.jsonl")
    with pytest.raises(ValueError, match="'pope_yes_no' answers are free-form text.*use eval.mode=generate, not letter"):
        evaluate(llava_tiny, ds, NoMerge(), NoPrune(), records, mode="letter", progress=False)
    assert records.records == []  # refused before any sample ran


# --- the summary's metric ----------------------------------------------------------------------------------
COSTS = dict.fromkeys(("tflops", "tflops_analytic", "vision_tower_tflops", "projector_tflops", "merge_tflops",
                       "importance_tflops", "lm_head_tflops", "prefill_ms", "visual_tokens", "text_tokens"), 1.0)


def rec(i, qtype="", correct=True, **extra):
    return {"id": str(i), "question_type": qtype, "categories": {}, "correct": correct, **COSTS, **extra}


def test_the_summary_computes_each_declared_metric_from_the_records():
    skipped = {"id": "x", "skipped": True, "error": "missing image"}
    vqa = [rec(0, "number", False, score=0.3), rec(1, "yes/no", True, score=1.0), skipped]
    s = summarize(vqa, {}, {"dataset": {"metric": "vqa_accuracy"}})
    assert s["score"] == pytest.approx(0.65) and s["accuracy"] == 0.5 and s["num_skipped"] == 1
    assert s["metric_details"]["by_type"] == {"number": pytest.approx(0.3), "yes/no": 1.0}

    mme = [rec(0, "existence", True, group="a"), rec(1, "existence", False, group="a"),
           rec(2, "OCR", True, group="b"), rec(3, "OCR", True, group="b")]
    s = summarize(mme, {}, {"dataset": {"metric": "mme_score"}})
    assert s["score"] == pytest.approx(50 + 0 + 100 + 100)
    assert s["metric_details"]["perception"] == s["score"] and s["metric_details"]["cognition"] == 0

    pope = [rec(0, "random", True, prediction="yes", answer="yes"), rec(1, "random", False, prediction="yes", answer="no"),
            rec(2, "popular", True, prediction="no", answer="no")]
    s = summarize(pope, {}, {"dataset": {"metric": "pope_f1"}})
    assert s["score"] == pytest.approx((2 / 3 + 0.0) / 2)  # random: P 1/2, R 1; popular: no positives
    assert s["metric_details"]["splits"]["random"]["accuracy"] == 0.5

    mmb = [rec(0, "ocr", True, group="0"), rec(1000000, "ocr", False, group="0"), rec(1, "ocr", True, group="1")]
    s = summarize(mmb, {}, {"dataset": {"metric": "circular_accuracy"}})
    assert s["score"] == 0.5 and s["accuracy"] == pytest.approx(2 / 3)

    assert summarize(mmb, {}, {"dataset": {"metric": "accuracy"}})["metric_details"] == {}
    with pytest.raises(ValueError, match="'bleu' is not a metric"):
        summarize(mmb, {}, {"dataset": {"metric": "bleu"}})


def test_test_dev_records_without_a_score_are_answered_but_not_scored():
    records = [rec(0, "", None, score=None, prediction="2"), rec(1, "", None, score=None, prediction="yes")]
    s = summarize(records, {}, {"dataset": {"metric": "vqa_accuracy"}})
    assert s["num_samples"] == 2 and np.isnan(s["score"]) and np.isnan(s["accuracy"])


# --- end to end on LLaVA-1.5 (tiny, random weights) --------------------------------------------------------
@pytest.fixture(scope="module")
def llava_tiny():
    return build("llava_1.5_tiny")


@pytest.fixture(scope="module")
def image_run(benchmark_roots, llava_tiny, tmp_path_factory):
    """name -> (dataset, records, summary) of one evaluation of that benchmark's fixture, run once: AIM
    merging (25% of the 576 tokens) and the 4-layer AIM pruning schedule."""
    return evaluated_once(llava_tiny, lambda name: load(name, benchmark_roots[name], "model=llava_1.5_tiny", "pruner=aim_toy"),
                          tmp_path_factory, mode_of, max_new_tokens=4)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_image_benchmark_runs_through_merger_and_pruner_and_is_scored_by_its_own_rules(name, image_run):
    ds, records, summary = image_run(name)
    samples = by_id(ds)
    assert [r["id"] for r in records] == [s.id for s in ds]
    skipped = [r for r in records if r.get("skipped")]
    assert [r["id"] for r in skipped] == SKIPPED[name] and all("image" in r["error"] for r in skipped)
    done = [r for r in records if not r.get("skipped")]
    for r in done:
        sample = samples[r["id"]]
        assert r["visual_tokens"] == 144  # 576 CLIP tokens merged to 25%
        assert r["visual_tokens_per_layer"][-1] < r["visual_tokens_per_layer"][0]  # pruned inside the LLM
        assert r["answer"] == sample.answer and r.get("group", "") == sample.group
        if name in FREE_FORM:  # the response, rescored here by the benchmark's rule, gives the record's score
            expected = scoring.score_response(sample.answer_format, r["response"], sample.answer, sample.answers)
            assert {k: r[k] for k in ("prediction", "correct", "score")} == expected
        else:
            assert r["prediction"] in "ABCD"[: len(sample.options)] and r["correct"] == (r["prediction"] == sample.answer)
    assert summary["metric"] == METRIC[name]
    assert summary["num_samples"] == len(done) and summary["num_skipped"] == len(SKIPPED[name])
    expected_score = {
        "accuracy": lambda: np.mean([r["correct"] for r in done]),
        "vqa_accuracy": lambda: np.mean([r["score"] for r in done]),
        "mme_score": lambda: scoring.mme_scores(done)["total"],
        "pope_f1": lambda: scoring.pope_scores(done)["f1"],
        "circular_accuracy": lambda: scoring.circular_accuracy(done)["circular_accuracy"],
    }[METRIC[name]]()
    assert summary["score"] == pytest.approx(expected_score)


def test_mme_and_mmbench_records_carry_their_groups(image_run):
    _, records, summary = image_run("mme")
    groups = [r["group"] for r in records if not r.get("skipped")]
    assert groups == ["existence/000000006040.jpg"] * 2 + ["existence/000000018150.jpg"] * 2 + ["code_reasoning/0020.png"] * 2
    assert set(summary["metric_details"]["subtasks"]) == {"existence", "code_reasoning"}
    assert summary["metric_details"]["subtasks"]["existence"]["images"] == 2
    _, records, summary = image_run("mmbench_en_dev")
    assert summary["metric_details"]["num_groups"] == 2  # question 2's only shift was skipped


def test_aim_run_writes_pope_f1_and_its_splits_to_results_json(benchmark_roots, tmp_path):
    out = tmp_path / "run"
    proc = run_in_process(  # `python -m aim.run ...`, in this process (tests/in_process.py)
        "aim.run", "dataset=pope", f"dataset.root={benchmark_roots['pope']}", "model=llava_1.5_tiny", "pruner=aim_toy",
        "eval.mode=generate", "eval.max_new_tokens=2", "eval.progress=false", "logger=none", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "pope_f1" and results["num_samples"] == 6 and results["num_skipped"] == 1
    assert set(results["metric_details"]["splits"]) == {"adversarial", "popular", "random"}
    assert results["score"] == pytest.approx(np.mean([v["f1"] for v in results["metric_details"]["splits"].values()]))
    assert "pope_f1:" in proc.stdout and "adversarial: accuracy" in proc.stdout


def test_gqa_reads_types_stored_as_a_json_string_and_survives_unreadable_ones(tmp_path, benchmark_roots, caplog):
    """`types` is used only for the breakdown: as a JSON string it is parsed; one that cannot be read (bad
    JSON, a list) leaves the question asked and scored, its types recorded as "(unreadable)", and says so."""
    import shutil

    import pyarrow as pa

    root = tmp_path / "gqa"
    shutil.copytree(benchmark_roots["gqa"] / "testdev_balanced_images", root / "testdev_balanced_images")
    schema = pa.schema([("id", pa.string()), ("imageId", pa.string()), ("question", pa.string()),
                        ("answer", pa.string()), ("types", pa.string())])
    rows = [{"id": "1", "imageId": "n161313", "question": "Is it overcast?", "answer": "no",
             "types": json.dumps({"structural": "verify", "semantic": "global", "detailed": "weatherVerify"})},
            {"id": "2", "imageId": "n161313", "question": "What is it?", "answer": "laptop", "types": "{structural: query"},
            {"id": "3", "imageId": "n161313", "question": "Who?", "answer": "girl", "types": "[1, 2]"}]
    fx.write(root / "testdev_balanced_instructions" / "testdev-00000-of-00001.parquet", rows, schema)
    with caplog.at_level("WARNING", logger="aim.data.image_benchmarks"):
        _, ds = load("gqa", root)
    s = by_id(ds)
    assert (s["1"].question_type, s["1"].categories) == ("verify", {"semantic": "global"})
    assert (s["2"].question_type, s["2"].categories) == ("(unreadable)", {"semantic": "(unreadable)"})
    assert s["3"].question_type == "(unreadable)" and s["3"].answer == "girl" and not s["3"].skip_reason
    assert "gqa: the `types` field of 2 question(s) cannot be read (first: 2)" in caplog.text


@pytest.mark.parametrize("name,fmt", [("vqav2", "vqa"), ("pope", "pope_yes_no")])
def test_vqav2_and_pope_score_by_lmms_eval_unless_the_dataset_asks_for_the_official_rule(name, fmt, benchmark_roots):
    _, ds = load(name, benchmark_roots[name])
    assert {s.answer_format for s in ds} == {fmt}
    valid, official = load(name, benchmark_roots[name], "dataset.scorer=official")
    assert valid.dataset.scorer == "official"
    assert {s.answer_format for s in official} == {fmt.replace("_yes_no", "") + "_official"}
    assert set(scoring.SCORERS) == {"lmms_eval", "official"}
    with pytest.raises(ConfigError, match="dataset.scorer: 'evalai' is not allowed; choose one of: lmms_eval, official"):
        load(name, benchmark_roots[name], "dataset.scorer=evalai")
