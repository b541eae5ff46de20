"""The paper's benchmarks are read in their release layouts, fail early without their data, put subtitles
into the prompt, skip missing videos, and report each benchmark's own metric with its breakdowns; every
one runs loader -> adapter -> merger -> pruner -> answer on the bundled model."""
import json
from dataclasses import asdict

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from aim.config import ConfigError, validate
from aim.data import DATASETS
from aim.data.benchmarks import answer_letter, split_embedded_options, strip_letters
from aim.data.subtitles import NO_SUBTITLES, SUBTITLE_HEADER, Cue, lines_at, parse_srt, videomme_lines_at
from aim.data.video import decode_frames_with_times
from aim.paths import CONF_DIR
from aim.tracking.results import summarize
from tests.benchmark_fixtures import SRT, evaluated_once
from tests.in_process import run_in_process
from tests.tiny_models import build

BENCHMARKS = ["videomme", "videomme_w_subtitle", "mlvu_dev", "egoschema_subset", "nextqa_mc_test",
              "perceptiontest_val_mc", "mvbench"]
MISSING = {  # the one question of each fixture whose video is not there
    "videomme": "601-1", "videomme_w_subtitle": "601-1", "mlvu_dev": "needle_0", "egoschema_subset": "2",
    "nextqa_mc_test": "9999999999_3", "perceptiontest_val_mc": "video_0000_0", "mvbench": "moving_count_2",
}
RELEASES = {  # what the missing-root message must tell the user to download
    "videomme": "lmms-lab/Video-MME", "videomme_w_subtitle": "lmms-lab/Video-MME", "mlvu_dev": "sy1998/MLVU_dev",
    "egoschema_subset": "lmms-lab/egoschema", "nextqa_mc_test": "lmms-lab/NExTQA",
    "perceptiontest_val_mc": "lmms-lab/PerceptionTest_Val", "mvbench": "OpenGVLab/MVBench",
}


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def load(name, root, **overrides):
    extra = [f"dataset.{k}={v}" for k, v in overrides.items()]
    valid = validate(composed(f"dataset={name}", f"dataset.root={root}", "dataset.num_frames=2", *extra))
    return valid, DATASETS.build(valid.dataset.name, **asdict(valid.dataset))


def by_id(dataset):
    return {s.id: s for s in dataset}


# --- each release's layout --------------------------------------------------------------------------------
def test_videomme_reads_the_parquet_and_the_data_folder(benchmark_roots):
    _, ds = load("videomme", benchmark_roots["videomme"])
    s = by_id(ds)
    assert list(s) == ["001-1", "001-2", "301-1", "601-1"]
    assert s["001-2"].options == ["red", "green", "blue", "cyan"] and s["001-2"].answer == "A"  # "A. red" -> red
    assert s["301-1"].answer == "D" and s["301-1"].question_type == "Action Recognition"
    assert s["301-1"].categories == {"duration": "medium", "domain": "Life Record", "sub_category": "Pet & Animal",
                                     "task_type": "Action Recognition"}
    assert s["001-1"].video == benchmark_roots["videomme"] / "data" / "vidA.mp4"
    assert s["001-1"].subtitles is None and not s["601-1"].video.exists()


def test_mlvu_reads_candidates_and_finds_videos_in_nested_folders(benchmark_roots):
    valid, ds = load("mlvu_dev", benchmark_roots["mlvu_dev"])
    assert valid.dataset.metric == "mean_over_types"
    s = by_id(ds)
    assert [x.question_type for x in ds] == ["plotQA", "plotQA", "count", "needle"]
    assert s["plotQA_1"].options == ["up", "down", "left", "right"] and s["plotQA_1"].answer == "C"
    assert s["count_0"].video == benchmark_roots["mlvu_dev"] / "video" / "4_count" / "count_7.mp4"


def test_egoschema_turns_the_answer_index_into_a_letter(benchmark_roots):
    _, ds = load("egoschema_subset", benchmark_roots["egoschema_subset"])
    s = by_id(ds)
    assert s["0"].options == ["red", "green", "blue", "yellow", "cyan"]
    assert [s[i].answer for i in ("0", "1", "2")] == ["D", "A", "E"]
    assert s["0"].video.name == "0074f737-11cb-497d-8d07-77c3a8127391.mp4" and s["0"].video.is_file()


def test_nextqa_ids_types_groups_and_original_video_folders(benchmark_roots):
    _, ds = load("nextqa_mc_test", benchmark_roots["nextqa_mc_test"])
    s = by_id(ds)
    assert list(s) == ["4010069381_0", "4010069381_1", "5572343997_0", "9999999999_3"]  # qid restarts per video
    assert s["4010069381_0"].options == ["one", "two", "three", "four", "five"] and s["4010069381_0"].answer == "C"
    assert [(x.question_type, x.categories["group"]) for x in ds] == [
        ("CW", "causal"), ("TN", "temporal"), ("DL", "descriptive"), ("DC", "descriptive")]
    assert s["5572343997_0"].video == benchmark_roots["nextqa_mc_test"] / "NExTVideo" / "0083" / "5572343997.mp4"


def test_perceptiontest_reads_answer_ids_areas_and_reasoning(benchmark_roots):
    _, ds = load("perceptiontest_val_mc", benchmark_roots["perceptiontest_val_mc"])
    s = by_id(ds)
    assert [x.answer for x in ds] == ["C", "A", "B", "B"]
    assert s["video_7036_0"].categories == {"area": "physics", "reasoning": "predictive"}
    assert s["video_7036_0"].question_type == "physics" and len(s["video_7036_0"].options) == 3


def test_mvbench_reads_one_json_per_task_with_text_answers(benchmark_roots):
    valid, ds = load("mvbench", benchmark_roots["mvbench"])
    assert valid.dataset.metric == "mvbench_accuracy"
    s = by_id(ds)
    assert sorted({x.question_type for x in ds}) == ["action_sequence", "fine_grained_pose", "moving_count"]
    # "1" is the text of option C, not option index 1
    assert s["moving_count_0"].options == ["3", "2", "1", "0"] and s["moving_count_0"].answer == "C"
    assert s["action_sequence_0"].video.parts[-3:] == ("star", "Charades_segment", "ZS9XR_1.mp4")
    assert s["fine_grained_pose_0"].video.name == "S001C001P001R001A001_rgb.mp4"  # .avi in the json


def test_limit_keeps_the_first_questions(benchmark_roots):
    _, ds = load("nextqa_mc_test", benchmark_roots["nextqa_mc_test"], limit=2)
    assert [s.id for s in ds] == ["4010069381_0", "4010069381_1"]


@pytest.mark.parametrize(
    "answer,options,given_as,letter",
    [("B", ["x", "y"], "letter", "B"), ("(B) y", ["x", "y"], "letter", "B"), ("3", list("abcde"), "index", "D"),
     (2, list("abc"), "index", "C"), ("1", ["3", "2", "1"], "text", "C"), ("y", ["x", "y"], "letter_or_text", "B"),
     ("A", ["x", "y"], "letter_or_text", "A")],
)
def test_answers_become_option_letters(answer, options, given_as, letter):
    assert answer_letter(answer, options, given_as) == letter


@pytest.mark.parametrize("answer,options,given_as", [("E", list("abcd"), "letter"), ("5", list("abc"), "index"),
                                                     ("z", ["x", "y"], "text")])
def test_an_answer_that_is_no_option_is_an_error(answer, options, given_as):
    with pytest.raises(ValueError, match="is not an option"):
        answer_letter(answer, options, given_as)


def test_option_prefixes_are_stripped_only_when_every_option_has_its_letter():
    assert strip_letters(["A. red", "B. two words", "C. blue"]) == ["red", "two words", "blue"]
    assert strip_letters(["(A) red", "(B) green"]) == ["red", "green"]
    assert strip_letters(["A. Lincoln", "George Washington"]) == ["A. Lincoln", "George Washington"]


def test_a_question_listing_its_options_is_split():
    q, opts = split_embedded_options("What happens first?\n(A) a cat runs\n(B) a dog sits\n(C) nothing")
    assert q == "What happens first?" and opts == ["a cat runs", "a dog sits", "nothing"]


# --- missing data fails early ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BENCHMARKS)
def test_a_missing_root_fails_validation_saying_what_to_download_and_where(name, tmp_path):
    root = tmp_path / "nothing_here"
    with pytest.raises(ConfigError) as err:
        validate(composed(f"dataset={name}", f"dataset.root={root}"))
    message = str(err.value)
    assert message.startswith("dataset.root: ")
    assert f"hf download {RELEASES[name]}" in message and str(root) in message


def test_a_root_without_questions_videos_or_subtitles_fails_validation(benchmark_roots, tmp_path):
    import shutil

    root = tmp_path / "videomme"
    root.mkdir()
    with pytest.raises(ConfigError, match=r"dataset.root: no videomme/test-\*.parquet under .*question files are missing"):
        validate(composed("dataset=videomme", f"dataset.root={root}"))
    shutil.copytree(benchmark_roots["videomme"] / "videomme", root / "videomme")
    with pytest.raises(ConfigError, match=r"dataset.root: no data/ under .*unzip videos_chunked_\*.zip"):
        validate(composed("dataset=videomme", f"dataset.root={root}"))
    shutil.copytree(benchmark_roots["videomme"] / "data", root / "data")
    validate(composed("dataset=videomme", f"dataset.root={root}"))
    with pytest.raises(ConfigError, match=r"dataset.root: no subtitle/ under .* and no .srt file anywhere under it: "
                                          r"the videomme_w_subtitle subtitles are not unpacked there.*subtitle.zip"):
        validate(composed("dataset=videomme_w_subtitle", f"dataset.root={root}"))


def test_subtitles_are_found_wherever_the_archive_put_them(benchmark_roots, tmp_path):
    """subtitle.zip unpacked one level deeper (or anywhere under root): found as a misplaced video is."""
    import shutil

    root = tmp_path / "videomme"
    for part in ("videomme", "data"):
        shutil.copytree(benchmark_roots["videomme"] / part, root / part)
    shutil.copytree(benchmark_roots["videomme"] / "subtitle", root / "extracted" / "subtitle")
    _, ds = load("videomme_w_subtitle", root)
    s = by_id(ds)
    assert s["001-1"].subtitles == root / "extracted" / "subtitle" / "vidA.srt"
    s["001-1"].load()
    assert "red circle" in s["001-1"].prompt.context
    s["301-1"].load()
    assert NO_SUBTITLES in s["301-1"].prompt.context  # vidB has no .srt anywhere


def test_the_cli_refuses_a_missing_root_before_loading_a_model(tmp_path):
    proc = run_in_process(  # `python -m aim.run ...`, in this process (tests/in_process.py)
        "aim.run", "dataset=mvbench", f"dataset.root={tmp_path / 'mvbench'}", "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert "aim: invalid config: dataset.root:" in proc.stderr and "--revision video" in proc.stderr
    assert not (tmp_path / "run" / "samples.jsonl").exists()


# --- decoding and subtitles --------------------------------------------------------------------------------
def test_sampled_frames_come_with_their_times(benchmark_roots):
    frames, times = decode_frames_with_times(benchmark_roots["videomme"] / "data" / "vidA.mp4", 2)
    # segment centres of 8 frames: 2 and 6; frame k has red 30k and is shown at k/8 s
    assert np.abs(frames[:, 0, 0, 0].astype(int) - [60, 180]).max() <= 2
    assert times.seconds == pytest.approx([0.25, 0.75])
    assert times.sampled_fps == pytest.approx(2.0)  # 2 frames sampled over the video's 1 s
    frames, times = decode_frames_with_times(benchmark_roots["videomme"] / "data" / "vidA.mp4", 20)
    assert len(frames) == 8 and times.seconds == pytest.approx([k / 8 for k in range(8)])
    assert times.sampled_fps == pytest.approx(8.0)  # every frame: the video's own rate


def test_a_container_without_a_frame_count_is_counted_by_packets(tmp_path):
    import av

    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w", format="matroska") as container:  # Matroska stores no frame count
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv444p"
        for k in range(8):
            frame = np.full((32, 32, 3), (30 * k, 60, 200), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0
    frames, times = decode_frames_with_times(path, 2)
    assert np.abs(frames[:, 0, 0, 0].astype(int) - [60, 180]).max() <= 2 and times.seconds == pytest.approx([0.25, 0.75])
    assert times.sampled_fps == pytest.approx(2.0)


def test_srt_cues_are_parsed_without_markup():
    cues = parse_srt(SRT)
    assert [(c.start, c.end, c.text) for c in cues] == [
        (0.0, 0.5, "red circle"), (0.5, 0.7, "never sampled"), (0.7, 1.0, "blue square")]
    assert lines_at(cues, [0.25, 0.75]) == ["red circle", "blue square"]
    assert lines_at(cues, [0.1, 0.2, 0.3]) == ["red circle"]  # a cue once, however many frames show it
    assert lines_at(cues, [1.0]) == []  # end is exclusive


def test_subtitle_cues_without_videomme_markup_are_dropped_as_lmms_eval_drops_them():
    """lmms_eval/tasks/videomme/utils.py keeps the first <font color="white" size=".72c"> text of a cue
    and drops a cue without it."""
    srt = ("1\n00:00:00,000 --> 00:00:01,000\nplain words\n\n"
           "2\n00:00:00,000 --> 00:00:01,000\n<font color=\"white\" size=\".72c\">kept</font>\n\n"
           "3\n00:00:00,000 --> 00:00:01,000\n<font color=\"yellow\">other markup</font>\n\n"
           "4\n00:00:00,000 --> 00:00:01,000\n<font color=\"white\" size=\".72c\">first</font>\n"
           "<font color=\"white\" size=\".72c\">second</font>\n")
    cues = parse_srt(srt)
    assert lines_at(cues, [0.5]) == ["plain words", "kept", "other markup", "first second"]  # markup-free text
    assert videomme_lines_at(cues, [0.5]) == ["kept", "first"]


def test_subtitle_cues_come_in_lmms_eval_set_order():
    """lmms-eval lists the cue indices as list(set(...)): ascending for small indices, not always."""
    cues = [Cue(float(i), i + 1.0, f"c{i}", f'<font color="white" size=".72c">c{i}</font>') for i in range(9)]
    assert videomme_lines_at(cues, [2.5, 0.5]) == ["c0", "c2"]
    assert videomme_lines_at(cues, [5.5, 8.5]) == ["c8", "c5"]  # {5, 8}: 8 sits in slot 0 of the set


def test_subtitles_at_the_sampled_frames_go_before_the_question(benchmark_roots):
    """Loading puts the subtitle lines at the sampled frames into the prompt's context, before Video-MME's
    instruction (lmms-eval's videomme_doc_to_text_subtitle)."""
    _, ds = load("videomme_w_subtitle", benchmark_roots["videomme_w_subtitle"])
    s = by_id(ds)
    _, question = s["001-1"].load()
    assert question == "how many objects are there ?"
    # the two-line cue gives its first <font> line only, as lmms-eval's pattern does
    assert s["001-1"].prompt.context == f"{SUBTITLE_HEADER}\nred circle\nblue\n"
    assert s["001-1"].prompt.text(question, s["001-1"].options).startswith(
        f"{SUBTITLE_HEADER}\nred circle\nblue\nSelect the best answer")
    s["301-1"].load()  # vidB has no .srt
    assert s["301-1"].prompt.context == f"{SUBTITLE_HEADER}\n{NO_SUBTITLES}\n"
    _, plain = load("videomme", benchmark_roots["videomme"])
    sample = by_id(plain)["001-1"]
    assert sample.load()[1] == "how many objects are there ?" and sample.prompt.context == ""


# --- the summary's metric ----------------------------------------------------------------------------------
def record(i, qtype, correct, **categories):
    costs = ("tflops", "tflops_analytic", "vision_tower_tflops", "projector_tflops", "merge_tflops",
             "importance_tflops", "lm_head_tflops", "prefill_ms", "visual_tokens", "text_tokens")
    return {"id": str(i), "question_type": qtype, "categories": categories, "correct": correct, **dict.fromkeys(costs, 1.0)}


def test_mean_over_types_weighs_every_type_the_same():
    records = [record(0, "plotQA", True, duration="short"), record(1, "plotQA", True, duration="long"),
               record(2, "plotQA", True, duration="long"), record(3, "count", False, duration="long"),
               {"id": "4", "skipped": True, "error": "missing video x.mp4"}]
    m = summarize(records, {}, {"dataset": {"metric": "mean_over_types"}})
    assert m["metric"] == "mean_over_types" and m["score"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert m["accuracy"] == pytest.approx(0.75) and m["num_skipped"] == 1
    assert m["accuracy_by_category"] == {"duration": {"long": pytest.approx(2 / 3), "short": 1.0}}
    a = summarize(records, {}, {"dataset": {"metric": "accuracy"}})
    assert a["score"] == a["accuracy"] == pytest.approx(0.75)
    assert summarize(records, {}, {})["metric"] == "accuracy"  # configs that name no metric


# --- end to end on the bundled model -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def benchmark_run(benchmark_roots, tmp_path_factory):
    """name -> (dataset, records, summary) of one evaluation of that benchmark's fixture by the bundled model,
    run once: the default merger=aim (25% of each frame's tokens) and pruner=aim_toy."""
    return evaluated_once(build("toy_llava_ov"), lambda name: load(name, benchmark_roots[name]), tmp_path_factory)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_runs_through_merger_and_pruner_and_is_summarised_by_its_metric(name, benchmark_run):
    ds, records, summary = benchmark_run(name)
    assert [r["id"] for r in records] == [s.id for s in ds]
    skipped = [r for r in records if r.get("skipped")]
    assert [r["id"] for r in skipped] == [MISSING[name]] and "missing video" in skipped[0]["error"]
    samples = by_id(ds)
    done = [r for r in records if not r.get("skipped")]
    for r in done:
        sample = samples[r["id"]]
        assert r["prediction"] in "ABCDE"[: len(sample.options)] and r["answer"] == sample.answer
        assert r["categories"] == sample.categories and r["question_type"] == sample.question_type
        assert r["visual_tokens"] < 2 * 49  # merged: 2 frames of 49 tokens each before the merger
        assert r["visual_tokens_per_layer"][-1] < r["visual_tokens_per_layer"][0]  # pruned inside the LLM
    assert summary["num_samples"] == len(done) and summary["num_skipped"] == 1
    correct = [r["correct"] for r in done]
    assert summary["accuracy"] == pytest.approx(np.mean(correct))
    if summary["metric"] in ("mean_over_types", "mvbench_accuracy"):  # letter mode: no empty answer to leave out
        types = {r["question_type"] for r in done}
        per_type = [np.mean([r["correct"] for r in done if r["question_type"] == t]) for t in types]
        assert summary["score"] == pytest.approx(np.mean(per_type))
    else:
        assert summary["score"] == summary["accuracy"]
    for key, values in summary["accuracy_by_category"].items():
        assert set(values) == {r["categories"][key] for r in done}


def test_subtitles_reach_the_model(benchmark_run):
    """The same questions with and without subtitles differ by exactly the subtitle prompt's words (the
    bundled tokenizer is word level)."""
    _, plain, _ = benchmark_run("videomme")
    _, subbed, _ = benchmark_run("videomme_w_subtitle")
    extra = {a["id"]: b["text_tokens"] - a["text_tokens"] for a, b in zip(plain, subbed) if not a.get("skipped")}
    # both prompts differ by the subtitle block and their post-prompts ("The best answer is:" with subtitles):
    # the same for every question, but for the subtitle lines: "red circle" and "blue" at vidA's sampled frames
    # (lmms-eval keeps the first <font> line of the two-line cue), "No subtitles available" for vidB
    assert extra["001-1"] == extra["001-2"] and extra["001-1"] - extra["301-1"] == 3 - len(NO_SUBTITLES.split())


def test_aim_run_reports_mlvu_m_avg_from_the_dataset_config(benchmark_roots, tmp_path):
    out = tmp_path / "run"
    proc = run_in_process(  # `python -m aim.run ...`, in this process (tests/in_process.py)
        "aim.run", "dataset=mlvu_dev", f"dataset.root={benchmark_roots['mlvu_dev']}", "dataset.num_frames=2",
        "model=toy_llava_ov", "eval.mode=letter", "eval.progress=false", "logger=none", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "mean_over_types" and results["num_samples"] == 3 and results["num_skipped"] == 1
    assert set(results["accuracy_by_type"]) == {"plotQA", "count"}
    assert results["score"] == pytest.approx(np.mean(list(results["accuracy_by_type"].values())))
    assert "mean_over_types:" in proc.stdout
