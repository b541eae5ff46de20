"""The evaluation loop scores, skips broken videos without stopping, and never scores a sample twice."""

import pytest

from aim.data import VideoMCQDataset
from aim.eval import evaluate, parse_letter
from aim.merging import NoMerge
from aim.pruning import NoPrune
from aim.tracking.records import SampleRecords
from aim.tracking.results import summarize


@pytest.mark.parametrize(
    "text,letter",
    [("B", "B"), ("(C) green", "C"), ("answer : D", "D"), ("I think A.", "A"), ("E", None), ("red", None)],
)
def test_parse_letter_takes_the_first_allowed_option_letter(text, letter):
    assert parse_letter(text, 4) == letter


def test_corrupt_videos_are_recorded_as_skipped_and_the_run_goes_on(tiny_adapter, bench_with_a_corrupt_video, tmp_path):
    ds = VideoMCQDataset(bench_with_a_corrupt_video, num_frames=2, limit=5)
    records = SampleRecords(tmp_path / "samples.jsonl")
    evaluate(tiny_adapter, ds, NoMerge(), NoPrune(), records, progress=False)
    assert [r["id"] for r in records.records] == [s.id for s in ds]
    skipped = [r for r in records.records if r.get("skipped")]
    assert [r["id"] for r in skipped] == ["q00002"] and "video_00002.mp4" in skipped[0]["error"]
    summary = summarize(records.records, {"merger": "none", "pruner": "none"}, {})
    assert summary["num_samples"] == 4 and summary["num_skipped"] == 1
    done = [r for r in records.records if not r.get("skipped")]
    for r in done:
        assert r["prediction"] in "ABCD" and r["visual_tokens"] == 2 * 49 and r["prefill_ms"] > 0
        assert r["tokens_per_layer"] == [r["visual_tokens"] + r["text_tokens"]] * 4
        assert r["tflops"] > 0


def test_a_second_pass_scores_only_what_is_missing(tiny_adapter, small_benchmark, tmp_path):
    path = tmp_path / "samples.jsonl"
    ds = VideoMCQDataset(small_benchmark, num_frames=2, limit=6)
    first = SampleRecords(path)
    evaluate(tiny_adapter, VideoMCQDataset(small_benchmark, num_frames=2, limit=3), NoMerge(), NoPrune(), first, progress=False)
    first.close()
    second = SampleRecords(path)
    evaluate(tiny_adapter, ds, NoMerge(), NoPrune(), second, progress=False)
    second.close()
    ids = [line.split('"id": "')[1].split('"')[0] for line in path.read_text().splitlines()]
    assert ids == [s.id for s in ds]


def test_generate_mode_parses_the_decoded_letter(tiny_adapter, small_benchmark, tmp_path):
    records = SampleRecords(tmp_path / "s.jsonl")
    evaluate(tiny_adapter, VideoMCQDataset(small_benchmark, num_frames=2, limit=2), NoMerge(), NoPrune(),
             records, mode="generate", max_new_tokens=3, progress=False)
    for r in records.records:
        assert r["prediction"] == parse_letter(r["response"], 4)


def test_likelihood_mode_scores_option_texts_after_a_prompt_without_options(tiny_adapter, small_benchmark, tmp_path):
    ds = VideoMCQDataset(small_benchmark, num_frames=2, limit=3)
    records = SampleRecords(tmp_path / "s.jsonl")
    evaluate(tiny_adapter, ds, NoMerge(), NoPrune(), records, mode="likelihood", progress=False)
    sample = next(iter(ds))
    inputs = tiny_adapter.prepare(sample.load_frames(), sample.question, sample.options, NoMerge(), scoring="likelihood")
    logits = tiny_adapter.prefill_logits(inputs)
    expected = "ABCD"[int(logits[tiny_adapter.option_text_ids(sample.options)].argmax())]
    assert records.records[0]["prediction"] == expected
    # the options are not in the prompt: only the question follows the video
    assert inputs.text_tokens == 2 + 1 + len(sample.question.split())
