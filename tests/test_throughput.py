"""Evaluation throughput changes no result: decoding ahead in worker processes (`dataset.num_workers`) and
prefilling samples together (`eval.batch_size`) give the records of one-at-a-time evaluation, in the same
order, every field but the timing equal."""
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from aim.checks import to_schema
from aim.data import Sample, VideoMCQDataset
from aim.eval import evaluate
from aim.eval.loop import stack_prefills
from aim.merging import MERGERS, NoMerge
from aim.models import MODELS
from aim.paths import CONF_DIR
from aim.pruning import PRUNERS
from aim.pruning.hooks import TokenPruner
from aim.tracking.records import SampleRecords
from aim.tracking.results import summarize

TIMING = {"prefill_ms", "batch_size", "batch_prefill_ms"}  # how long, and how a batch's time was shared


def preset(name: str):
    """A model preset of conf/model built as aim.run builds it: the bundled trained toy model, or a tiny
    Hugging Face architecture with random weights."""
    node = OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")
    torch.manual_seed(0)
    return MODELS.get(node.name).from_config(**asdict(to_schema(MODELS.config_schema(node.name), node, "model")))


@pytest.fixture(scope="module", params=["toy_llava_ov", "llava_onevision_tiny"])
def adapter(request):
    return preset(request.param)


def records_of(adapter, dataset, path, merger=None, pruner=None, **knobs) -> list[dict]:
    records = SampleRecords(path)
    evaluate(adapter, dataset, merger or MERGERS.build("aim", ratio=0.25), pruner or PRUNERS.build("aim", l1=2, l2=4),
             records, progress=False, **knobs)
    records.close()
    return records.records


def untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def test_batched_prefills_give_the_records_of_batch_1(adapter, small_benchmark, tmp_path):
    """The default method (AIM merging 25% + AIM pruning at layers 2-4): four samples in batches of 2. Their
    prompts differ in length (padded batches) but hold equally many visual tokens, so every sample is batched."""
    ds = VideoMCQDataset(small_benchmark, num_frames=2, limit=4)
    alone = records_of(adapter, ds, tmp_path / "alone.jsonl")
    batched = records_of(adapter, ds, tmp_path / "batched.jsonl", batch_size=2)
    assert alone[0]["text_tokens"] != alone[1]["text_tokens"]  # the first batch really is padded
    assert [r["batch_size"] for r in alone] == [1] * 4 and [r["batch_size"] for r in batched] == [2] * 4
    assert untimed(batched) == untimed(alone)  # ids in order, answers, tokens per layer, FLOPs
    for r in batched:  # a batch's time, shared: the record says so
        assert r["prefill_ms"] == pytest.approx(r["batch_prefill_ms"] / 2)
    method = {"merger": "aim", "pruner": "aim"}  # and so does the summary
    assert summarize(batched, method, {})["prefill_batch_size"] == 2 == 2 * summarize(alone, method, {})["prefill_batch_size"]


@pytest.mark.parametrize("pruner", [("aim", dict(l1=2, l2=4)), ("none", {})])
def test_a_padded_and_an_equal_layout_batch_score_as_each_sample_alone(adapter, small_benchmark, pruner):
    """Prefill logits of a batch, row by row, equal the sample's own within float tolerance: a left-padded
    batch (different text lengths), and an equal-layout one (the same sample twice: no pads, shared roles)."""
    ds = VideoMCQDataset(small_benchmark, num_frames=2, limit=3)
    p = PRUNERS.build(pruner[0], **pruner[1])
    hook = TokenPruner(adapter.decoder_layers, p)
    merger = MERGERS.build("aim", ratio=0.25)
    inputs = [adapter.prepare(s.load_frames(), s.question, s.options, merger) for s in ds]
    alone = []
    for i in inputs:
        with hook.attached(i.token_roles):
            alone.append(adapter.prefill_logits(i))
    for rows in ([0, 1, 2], [0, 0]):
        embeds, positions, mask, roles = stack_prefills([inputs[i] for i in rows])
        assert (mask is None) == (rows == [0, 0])  # only the equal layouts go unpadded
        with hook.attached(roles):
            batched = adapter.prefill_logits_batch(embeds, positions, mask)
        for row, i in enumerate(rows):
            torch.testing.assert_close(batched[row], alone[i], atol=1e-4, rtol=1e-4)


def test_the_random_pruner_is_prefilled_one_sample_at_a_time(small_benchmark, tmp_path):
    """Its draws depend on the batch's shape: batching it would change its choices, so it is not batched."""
    ds = VideoMCQDataset(small_benchmark, num_frames=2, limit=2)
    adapter = preset("llava_onevision_tiny")
    alone = records_of(adapter, ds, tmp_path / "a.jsonl", NoMerge(), PRUNERS.build("random", l1=2, l2=4, seed=1))
    batched = records_of(adapter, ds, tmp_path / "b.jsonl", NoMerge(), PRUNERS.build("random", l1=2, l2=4, seed=1),
                         batch_size=2)
    assert [r["batch_size"] for r in batched] == [1] * 2
    assert untimed(batched) == untimed(alone)


def test_workers_decode_ahead_and_give_the_records_of_sequential_decoding(bench_with_a_corrupt_video, tmp_path):
    """Two worker processes and batches of 2 against the main process alone and batch 1: the same records in
    the same order, the corrupt video a skipped record in its place with its reason; the run goes on."""
    ds = VideoMCQDataset(bench_with_a_corrupt_video, num_frames=2, limit=4)
    adapter = preset("toy_llava_ov")
    sequential = records_of(adapter, ds, tmp_path / "s.jsonl", num_workers=0)
    workers = records_of(adapter, ds, tmp_path / "w.jsonl", num_workers=2, batch_size=2)
    assert [r["id"] for r in workers] == [s.id for s in ds]
    assert workers[2]["skipped"] and "video_00002.mp4" in workers[2]["error"]
    assert untimed(workers) == untimed(sequential)


@dataclass
class MarkingSample(Sample):
    """A sample that leaves a file behind when it is decoded (in whichever process decodes it)."""

    marks: Path = Path(".")

    def load(self):
        (self.marks / self.id).touch()
        return super().load()


def test_a_resumed_run_with_workers_decodes_only_the_samples_not_yet_recorded(small_benchmark, tmp_path):
    marks = tmp_path / "decoded"
    marks.mkdir()
    ds = VideoMCQDataset(small_benchmark, num_frames=2, limit=3)
    ds.samples = [MarkingSample(**{**vars(s), "marks": marks}) for s in ds.samples]
    adapter = preset("llava_onevision_tiny")
    path = tmp_path / "samples.jsonl"
    first = SampleRecords(path)
    evaluate(adapter, ds.samples[:1], NoMerge(), PRUNERS.build("none"), first, progress=False)
    first.close()
    for m in marks.iterdir():
        m.unlink()
    records_of(adapter, ds, path, NoMerge(), PRUNERS.build("none"), num_workers=2, batch_size=2)
    assert sorted(m.name for m in marks.iterdir()) == [s.id for s in ds.samples[1:]]
    ids = [line.split('"id": "')[1].split('"')[0] for line in path.read_text().splitlines()]
    assert ids == [s.id for s in ds.samples]


def test_the_throughput_knobs_are_validated_and_a_rerun_may_change_them():
    """`dataset.num_workers` is read beside every dataset's own fields; neither knob is part of the run's
    result spec, so a rerun in the same run dir with other values resumes instead of being refused."""
    from hydra import compose, initialize_config_dir

    from aim.config import validate
    from aim.run import result_spec

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        default = compose("config")
        tuned = compose("config", overrides=["eval.batch_size=8", "dataset.num_workers=3"])
    valid = validate(tuned)
    assert (valid.eval.batch_size, valid.loading.num_workers) == (8, 3)
    assert validate(default).loading.num_workers == 0  # the bundled benchmark's tiny videos: no workers
    assert not hasattr(valid.dataset, "num_workers")  # no dataset plugin sees it (nor the fidelity cache's key)
    assert result_spec(tuned) == result_spec(default)
