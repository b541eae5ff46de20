"""Fidelity to the unreduced model (aim.eval.fidelity): agreement and KL(full || reduced) per sample and on
average, without labels; the unreduced answers are computed once per model + dataset + frames + eval mode
and shared through an append-only cache; the unreduced run is its own reference (exactly 1 and 0)."""
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from aim.config import ConfigError, validate
from aim.data import VideoMCQDataset
from aim.eval import evaluate
from aim.eval.fidelity import Fidelity, ReferenceCache, build_fidelity, kl_divergence, reference_key, reference_spec
from aim.merging import MERGERS, NoMerge
from aim.pruning import PRUNERS, NoPrune
from aim.paths import CONF_DIR
from aim.toy import asset_dir
from aim.tracking.records import SampleRecords
from aim.tracking.results import summarize
from tests.in_process import run_in_process
from tests.sweep_helpers import NUM_SAMPLES


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def key_of(*overrides):
    return reference_key(reference_spec(validate(composed(*overrides))))


# ------------------------------------------------------------------------------------------ pieces

def test_kl_is_the_definition_in_nats_and_zero_only_for_the_same_distribution():
    p, q = np.array([0.7, 0.2, 0.1]), np.array([0.5, 0.25, 0.25])
    expected = float(np.sum(p * np.log(p / q)))
    assert kl_divergence(np.log(p), np.log(q)) == pytest.approx(expected, rel=1e-12)
    assert kl_divergence(np.log(q), np.log(p)) != pytest.approx(expected)  # KL(full || reduced): not symmetric
    assert kl_divergence(np.log(p), np.log(p)) == 0.0
    assert kl_divergence([0.0, -math.inf], [-0.1, -2.3]) == pytest.approx(0.1)  # p_i = 0 terms count 0


def test_the_cache_key_holds_what_decides_the_unreduced_answer_and_nothing_else():
    base = key_of()
    # the same unreduced answers: another reduction, fewer samples, another logger or cache place
    assert key_of("merger=none", "pruner=none") == base
    assert key_of("merger=pool", "pruner=fastv", "dataset.limit=3", "logger=none", "eval.progress=false",
                  "fidelity.cache_dir=/elsewhere") == base
    # other unreduced answers: the model, the frames, the scoring, the seed
    changed = [key_of("model=llava_onevision_tiny"), key_of("model.dtype=bfloat16"), key_of("dataset.num_frames=8"),
               key_of("eval.mode=likelihood"), key_of("seed=1"), key_of("dataset.num_samples=40")]
    assert base not in changed and len(set(changed)) == len(changed)
    # the max new tokens matter only to generated answers
    assert key_of("eval.max_new_tokens=3") == base
    assert key_of("eval.mode=generate", "eval.max_new_tokens=3") != key_of("eval.mode=generate")


def test_weights_retrained_in_the_same_place_get_new_reference_answers(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    shutil.copy(asset_dir("toy_llava_ov") / "config.json", checkpoint)  # validation reads the LLM's layer count
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(bytes(3_000_000))
    first = key_of(f"model.pretrained={checkpoint}")
    os.utime(weights, (1, 1))  # the same bytes, touched (or copied): the same answers
    assert key_of(f"model.pretrained={checkpoint}") == first
    weights.write_bytes(b"\1" + bytes(2_999_999))  # other weights under the same name
    assert key_of(f"model.pretrained={checkpoint}") != first


def test_fidelity_fields_are_validated_by_name():
    with pytest.raises(ConfigError, match="fidelity.enabled"):
        validate(composed("fidelity.enabled=sometimes"))
    with pytest.raises(ConfigError, match="fidelity.cache_dir: empty"):
        validate(composed("fidelity.cache_dir=''"))
    with pytest.raises(ConfigError, match="fidelity.dir: unknown field; allowed fields: enabled, cache_dir"):
        validate(composed("+fidelity.dir=x"))
    assert build_fidelity(validate(composed("fidelity.enabled=false"))) is None


def _append_many(path, tag, n):
    cache = ReferenceCache(path)
    for i in range(n):
        cache.add({"id": f"{tag}{i}", "prediction": "A", "log_probs": [-0.1 * i] * 50})


def test_the_cache_survives_concurrent_writers_and_a_torn_line(tmp_path):
    path = tmp_path / "ref.jsonl"
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_append_many, args=(path, tag, 200)) for tag in "ab"]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=60)
    assert [w.exitcode for w in writers] == [0, 0]
    with open(path, "ab") as f:  # a job killed in the middle of a line
        f.write(b'{"id": "torn", "predic')
    cache = ReferenceCache(path)
    assert len(cache) == 400 and "torn" not in cache
    cache.add({"id": "after", "prediction": "B", "log_probs": None})  # ends the torn line first
    again = ReferenceCache(path)
    assert len(again) == 401 and again.get("after")["prediction"] == "B" and again.get("b199")["prediction"] == "A"


# another job that claims sample s1, says so, and computes its entry when the test lets it (a line on stdin)
CLAIMER = """
import sys
from aim.eval.fidelity import ReferenceCache
cache = ReferenceCache(sys.argv[1])
with cache.claim("s1"):
    print("claimed", flush=True)
    sys.stdin.readline()
    cache.add({"id": "s1", "prediction": "B", "log_probs": None})
"""


def test_a_sample_another_job_is_computing_is_waited_for_not_computed_again(tmp_path):
    import threading

    path = tmp_path / "ref.jsonl"
    other = subprocess.Popen([sys.executable, "-c", CLAIMER, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "claimed"
        computed, measured = [], []

        def compute():
            computed.append(1)
            return {"prediction": "A", "log_probs": None}

        fidelity = Fidelity(ReferenceCache(path))
        waiter = threading.Thread(target=lambda: measured.append(fidelity.measure("s1", {"prediction": "B"}, compute)))
        waiter.start()
        waiter.join(timeout=2)
        assert waiter.is_alive() and not computed  # it waits for the job holding the claim
        other.stdin.write("\n")
        other.stdin.flush()
        waiter.join(timeout=60)
        assert other.wait(timeout=60) == 0
    finally:
        other.kill()
    assert not computed and fidelity.computed == 0
    assert measured == [{"agreement": True, "kl": None, "reference_prediction": "B"}]  # the other job's entry
    assert fidelity.measure("s2", {"prediction": "A"}, compute)["reference_prediction"] == "A"  # nobody claims s2
    assert computed == [1] and fidelity.computed == 1


# ------------------------------------------------------------------------------------------ the loop

def aim_reduction():
    return MERGERS.build("aim", ratio=0.25), PRUNERS.build("aim", l1=1, l2=3)


def run_eval(adapter, ds, merger, pruner, path, fidelity, **kwargs):
    records = SampleRecords(path)
    try:
        evaluate(adapter, ds, merger, pruner, records, progress=False, fidelity=fidelity, **kwargs)
    finally:
        records.close()
    return records.records


def test_the_unreduced_run_is_the_reference_and_a_reduced_run_is_measured_against_it(tiny_adapter, small_benchmark,
                                                                                    tmp_path):
    ds = VideoMCQDataset(small_benchmark, num_frames=2, limit=5)
    reference = ReferenceCache(tmp_path / "cache" / "full.jsonl")
    full = run_eval(tiny_adapter, ds, NoMerge(), NoPrune(), tmp_path / "full.jsonl", Fidelity(reference, True))
    assert all(r["agreement"] is True and r["kl"] == 0.0 for r in full)
    summary = summarize(full, {}, {})
    assert summary["agreement"] == 1.0 and summary["kl"] == 0.0 and summary["fidelity_samples"] == 5
    assert {r["id"]: r["prediction"] for r in full} == {s.id: reference.get(s.id)["prediction"] for s in ds}

    # the reduced setting's own option distributions, recorded as if it were a reference (another cache)
    merger, pruner = aim_reduction()
    own = ReferenceCache(tmp_path / "cache" / "reduced.jsonl")
    run_eval(tiny_adapter, ds, merger, pruner, tmp_path / "own.jsonl", Fidelity(own, True))
    fidelity = Fidelity(reference)
    reduced = run_eval(tiny_adapter, ds, merger, pruner, tmp_path / "reduced.jsonl", fidelity)
    assert fidelity.computed == 0  # every unreduced answer was in the cache
    for r in reduced:
        full_answer, reduced_answer = reference.get(r["id"]), own.get(r["id"])
        assert r["reference_prediction"] == full_answer["prediction"]
        assert r["agreement"] == (r["prediction"] == full_answer["prediction"])
        assert r["kl"] == pytest.approx(kl_divergence(full_answer["log_probs"], reduced_answer["log_probs"]), abs=1e-12)
    assert any(r["kl"] > 1e-6 for r in reduced)  # the reduction does move the answer distribution
    summary = summarize(reduced, {}, {})
    assert summary["agreement"] == pytest.approx(np.mean([r["agreement"] for r in reduced]))
    assert summary["kl"] == pytest.approx(np.mean([r["kl"] for r in reduced]))


def test_unreduced_answers_are_computed_once_across_reduced_runs_and_resumes(tiny_adapter, small_benchmark,
                                                                           tmp_path, monkeypatch):
    reference_forwards = []
    prepare = tiny_adapter.prepare

    def counting_prepare(frames, question, options, merger, **kwargs):
        if isinstance(merger, NoMerge):  # the reduced runs here merge: NoMerge is the reference's forward
            reference_forwards.append(question)
        return prepare(frames, question, options, merger, **kwargs)

    monkeypatch.setattr(tiny_adapter, "prepare", counting_prepare)
    cache_path = tmp_path / "cache" / "ref.jsonl"
    merger, pruner = aim_reduction()
    first = tmp_path / "aim.jsonl"
    run_eval(tiny_adapter, VideoMCQDataset(small_benchmark, num_frames=2, limit=3), merger, pruner, first,
             Fidelity(ReferenceCache(cache_path)))
    assert len(reference_forwards) == 3
    # the same run resumed with more samples: only the new samples' unreduced answers
    run_eval(tiny_adapter, VideoMCQDataset(small_benchmark, num_frames=2, limit=5), merger, pruner, first,
             Fidelity(ReferenceCache(cache_path)))
    assert len(reference_forwards) == 5
    # another reduction on the same samples: none at all
    fidelity = Fidelity(ReferenceCache(cache_path))
    records = run_eval(tiny_adapter, VideoMCQDataset(small_benchmark, num_frames=2, limit=5),
                       MERGERS.build("pool", ratio=0.5), PRUNERS.build("fastv", k=1, keep=0.5), tmp_path / "pool.jsonl",
                       fidelity)
    assert len(reference_forwards) == 5 and fidelity.computed == 0
    assert len(cache_path.read_text().splitlines()) == 5
    assert all(isinstance(r["agreement"], bool) and r["kl"] >= 0 for r in records)


@pytest.fixture
def unlabeled(small_benchmark, tmp_path):
    """The small benchmark's questions with no answers: `"answer": null`, as the generic video_mcq loader
    reads a questions file of the user's own videos."""
    rows = json.loads((small_benchmark / "questions.json").read_text())
    root = tmp_path / "unlabeled"
    root.mkdir()
    (root / "questions.json").write_text(json.dumps([{**r, "answer": None} for r in rows]))
    return root, small_benchmark / "videos"


@pytest.mark.parametrize("mode", ["letter", "generate"])
def test_unlabeled_samples_get_fidelity_and_no_accuracy(tiny_adapter, unlabeled, tmp_path, mode):
    root, videos = unlabeled
    ds = VideoMCQDataset(root, video_dir=str(videos), num_frames=2, limit=4)
    merger, pruner = aim_reduction()
    records = run_eval(tiny_adapter, ds, merger, pruner, tmp_path / "s.jsonl",
                       Fidelity(ReferenceCache(tmp_path / "ref.jsonl")), mode=mode, max_new_tokens=2)
    assert len(records) == 4
    assert all(r["answer"] is None and r["correct"] is None and isinstance(r["agreement"], bool) for r in records)
    summary = summarize(records, {}, {})
    assert math.isnan(summary["accuracy"]) and summary["accuracy_by_type"] == {}  # nothing to score against
    assert summary["agreement"] == pytest.approx(np.mean([r["agreement"] for r in records]))
    assert summary["fidelity_samples"] == 4
    if mode == "letter":
        assert summary["kl"] == pytest.approx(np.mean([r["kl"] for r in records]))
    else:  # generated answers: agreement only
        assert all(r["kl"] is None for r in records) and summary["kl"] is None


# ------------------------------------------------------------------------------------------ aim.run

def aim_run(out_dir, cache_dir, env, *overrides):
    """`python -m aim.run` on 4 bundled questions, in this process (tests/in_process.py)."""
    proc = run_in_process("aim.run", f"hydra.run.dir={out_dir}", f"dataset.num_samples={NUM_SAMPLES}", "dataset.limit=4",
                          "eval.progress=false", "logger=none", f"fidelity.cache_dir={cache_dir}", *overrides, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = [json.loads(line) for line in (out_dir / "samples.jsonl").read_text().splitlines()]
    return json.loads((out_dir / "results.json").read_text()), samples, proc.stdout


def test_aim_run_records_fidelity_and_the_unreduced_run_scores_exactly_one_and_zero(tmp_path, bundled_env):
    cache = tmp_path / "cache"
    results, samples, out = aim_run(tmp_path / "reduced", cache, bundled_env)  # merger=aim pruner=aim_toy
    assert "(4 computed by this run)" in out
    assert results["fidelity_samples"] == 4
    assert results["agreement"] == pytest.approx(np.mean([s["agreement"] for s in samples]))
    assert results["kl"] == pytest.approx(np.mean([s["kl"] for s in samples]))
    assert all(s["kl"] >= 0 and s["agreement"] == (s["prediction"] == s["reference_prediction"]) for s in samples)
    [cache_file] = cache.glob("*.jsonl")
    assert len(cache_file.read_text().splitlines()) == 4

    results, samples, out = aim_run(tmp_path / "full", cache, bundled_env, "merger=none", "pruner=none")
    assert results["agreement"] == 1.0 and results["kl"] == 0.0  # exactly
    assert all(s["agreement"] is True and s["kl"] == 0.0 for s in samples)
    assert "(0 computed by this run)" in out and len(cache_file.read_text().splitlines()) == 4
    # the lazily computed reference answers are the unreduced run's answers
    cached = {e["id"]: e["prediction"] for e in map(json.loads, cache_file.read_text().splitlines())}
    assert cached == {s["id"]: s["prediction"] for s in samples}
