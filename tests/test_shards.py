"""Sharded benchmarks (issue #24): `dataset.shards=N` splits one evaluation into N shards (samples i, i+N, ...),
each into its own resumable records under `<run dir>/shards/<i>/`, and one merge writes the run's
samples.jsonl + results.json as the unsharded run would. The merge refuses incomplete shards; a sweep launches
a sharded job as one task per shard; `sweep.py status` counts shards; `collect` sees one row per run.
End to end: a local sharded run equals the unsharded one (slow); the SLURM array version is in test_slurm.py."""
import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from aim.checks import ConfigError
from aim.paths import CONF_DIR
from aim.tracking import shards
from aim.tracking.results import summarize
from tests.in_process import run_in_process
from tests.sweep_helpers import NUM_SAMPLES, REPO

TIMINGS = ("prefill_ms", "batch_prefill_ms", "prefill_ms_median", "ttft_ms", "decode_tokens_per_s", "throughput")


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("override, message", [
    ("dataset.shards=0", "dataset.shards: must be in [1, inf), got 0"),
    ("dataset.shards=two", "dataset.shards: Value 'two'"),
    ("dataset.shards=1.5", "dataset.shards: Value '1.5'"),
    ("dataset.shards=3 dataset.shard=3", "dataset.shard: must be in [0, 2], got 3"),
    ("dataset.shards=3 dataset.shard=-1", "dataset.shard: must be in [0, 2], got -1"),
    ("dataset.shards=2 budget.fraction=0.5", "dataset.shards: budget mode (budget.tflops / fraction / prefill_ms) runs unsharded"),
])
def test_dataset_shards_is_an_integer_of_at_least_one_and_the_shard_one_of_them(override, message):
    from aim.config import validate

    with pytest.raises(ConfigError) as info:
        validate(composed(*override.split()))
    assert str(info.value).startswith(message)


def test_every_dataset_takes_shards_unsharded_by_default():
    from aim.config import validate

    assert validate(composed()).sharding == validate(composed("dataset.shards=1")).sharding
    assert validate(composed()).sharding.shards == 1 and validate(composed()).sharding.shard is None
    valid = validate(composed("dataset=video_mcq", "dataset.root=/nowhere", "dataset.shards=4", "dataset.shard=2"))
    assert (valid.sharding.shards, valid.sharding.shard) == (4, 2)
    assert not hasattr(valid.dataset, "shards")  # not a dataset plugin's field: it selects no samples


def test_shard_i_takes_every_nth_sample_from_i_and_the_shards_partition_the_dataset():
    samples = [f"q{k}" for k in range(10)]
    parts = [shards.shard_samples(samples, i, 3) for i in range(3)]
    assert parts == [["q0", "q3", "q6", "q9"], ["q1", "q4", "q7"], ["q2", "q5", "q8"]]
    assert sorted(sum(parts, [])) == sorted(samples)


# ------------------------------------------------------------------------------------------------ merge

def record(k: int, correct: bool = True, skipped: bool = False) -> dict:
    """A record with what summarize reads (as aim.eval.loop writes them), varying by sample."""
    if skipped:
        return {"id": f"q{k:03d}", "skipped": True, "error": "cannot decode"}
    return {"id": f"q{k:03d}", "question_type": ["colour", "count"][k % 2], "categories": {}, "answer": "A",
            "prediction": "A" if correct else "B", "correct": correct, "num_frames": 4, "visual_tokens": 40 + k,
            "text_tokens": 30, "visual_tokens_per_frame": [10 + k] * 4, "tflops": 1e-4 * (k + 1),
            "tflops_analytic": 1e-4 * (k + 1), "tflops_fastv": 2e-4, "vision_tower_tflops": 3e-4,
            "projector_tflops": 4e-5, "merge_tflops": 1e-6, "importance_tflops": 1e-5, "lm_head_tflops": 1e-8,
            "prefill_ms": 10.0 + k, "batch_size": 1, "batch_prefill_ms": 10.0 + k}


CONFIG = {"dataset": {"name": "synthetic_video", "num_frames": 4, "shards": 3, "shard": None}, "merger": {"name": "aim"}}
METHOD = {"merger": "aim", "pruner": "none"}


def write_shard(run_dir, i: int, n: int, records: list[dict], recorded: int | None = None, finished: bool = True):
    """Shard i of n as aim.run leaves it: shard.json with its ids, the first `recorded` records appended."""
    directory = shards.shard_dir(run_dir, i)
    shards.write_plan(directory, i, n, [r["id"] for r in records], METHOD, CONFIG)
    kept = records if recorded is None else records[:recorded]
    (directory / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    if finished:
        speed = {"samples": len(kept), "wall_s": 2.0, "samples_per_s": len(kept) / 2.0}  # its last invocation's
        (directory / "results.json").write_text(json.dumps({"throughput": speed}))
        (directory / "job.json").write_text(json.dumps({"state": "done", "attempt": 1}))
    return directory


def sharded(run_dir, records: list[dict], n: int, partial: dict | None = None):
    """`records` (in dataset order) split over n shards as aim.run splits them; `partial`: {shard: recorded}."""
    partial = partial or {}
    for i in range(n):
        write_shard(run_dir, i, n, shards.shard_samples(records, i, n), partial.get(i), i not in partial)


def test_merge_writes_the_records_in_dataset_order_and_the_summary_the_unsharded_run_writes(tmp_path):
    records = [record(k, correct=k % 3 != 0, skipped=k == 4) for k in range(8)]
    # shard 1 resumed after a torn line: its file order is not dataset order, the merge's is
    sharded(tmp_path, records, 3)
    one = shards.shard_dir(tmp_path, 1)
    (one / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (records[4], records[1], records[7])))
    summary, merged = shards.merge(tmp_path)
    assert [r["id"] for r in merged] == [r["id"] for r in records]
    assert [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()] == records
    unsharded = {**summarize(records, METHOD, CONFIG), "records_dropped": 0}  # what aim.run.run writes
    # and the shards' throughputs added up: 8 samples in 3 x 2 s of evaluation
    unsharded["throughput"] = {"samples": 8, "wall_s": 6.0, "samples_per_s": 8 / 6.0, "shards": 3}
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(unsharded))
    assert summary["num_samples"] == 7 and summary["skipped_ids"] == ["q004"]


@pytest.mark.parametrize("partial, says", [
    ({1: 2}, "shard 1 has recorded 2 of its 3 samples (first missing: q007)"),
    ({2: 0}, "shard 2 has recorded 0 of its 2 samples"),
])
def test_merge_refuses_while_a_shard_is_incomplete_and_writes_nothing(tmp_path, partial, says):
    sharded(tmp_path, [record(k) for k in range(8)], 3, partial)
    with pytest.raises(shards.IncompleteShards, match="cannot merge, 1 of 3 shards are incomplete") as info:
        shards.merge(tmp_path)
    assert says in str(info.value)
    assert not (tmp_path / "samples.jsonl").exists() and not (tmp_path / "results.json").exists()
    assert shards.merge_if_complete(tmp_path) is None  # what a shard that is not the last does


def test_merge_refuses_a_shard_that_never_started(tmp_path):
    records = [record(k) for k in range(6)]
    for i in (0, 2):
        write_shard(tmp_path, i, 3, shards.shard_samples(records, i, 3))
    with pytest.raises(shards.IncompleteShards, match="shard 1 has not started"):
        shards.merge(tmp_path)
    with pytest.raises(shards.IncompleteShards, match="no shard has started"):
        shards.merge(tmp_path / "elsewhere")


@pytest.mark.parametrize("damage", ["", '{"shard": 1', "[]"])
def test_merge_refuses_a_damaged_shard_plan_naming_it(tmp_path, damage):
    """A torn shard.json stopped the merge with a JSONDecodeError traceback."""
    sharded(tmp_path, [record(k) for k in range(6)], 3)
    plan = shards.shard_dir(tmp_path, 1) / "shard.json"
    plan.write_text(damage)
    with pytest.raises(shards.IncompleteShards, match=rf"{plan.parent}: shard.json unreadable \(.*\); rerun that shard"):
        shards.merge(tmp_path)
    assert not (tmp_path / "results.json").exists()
    row = shards.progress(tmp_path, 3)[1]  # sweep status and resubmit: not complete, so rerun
    assert not row["complete"] and "unreadable" in row["problem"]
    assert shards.merge_if_complete(tmp_path) is None


def test_a_shard_whose_results_json_is_damaged_is_merged_and_left_out_of_the_throughput(tmp_path):
    """Its records are whole (samples.jsonl), only its last invocation's timing is lost: the merge goes on and
    says so, instead of stopping on a JSONDecodeError."""
    records = [record(k) for k in range(6)]
    sharded(tmp_path, records, 3)
    (shards.shard_dir(tmp_path, 2) / "results.json").write_text('{"throughput": {"sampl')
    with pytest.warns(UserWarning, match=r"results.json unreadable \(.*\); the merged throughput leaves shard 2 out"):
        summary, merged = shards.merge(tmp_path)
    assert [r["id"] for r in merged] == [r["id"] for r in records]
    assert summary["throughput"]["samples"] == 4 and summary["throughput"]["shards_left_out"] == [2]


def test_the_last_shard_to_complete_merges(tmp_path):
    records = [record(k) for k in range(5)]
    sharded(tmp_path, records, 2, {0: 1})
    assert shards.merge_if_complete(tmp_path) is None and not (tmp_path / "results.json").exists()
    write_shard(tmp_path, 0, 2, shards.shard_samples(records, 0, 2))  # shard 0 resumed and finished
    summary, merged = shards.merge_if_complete(tmp_path)
    assert [r["id"] for r in merged] == [r["id"] for r in records] and summary["num_samples"] == 5


def test_merge_by_hand_from_the_command_line_refuses_then_merges(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_cli", REPO / "launch" / "sweep.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    records = [record(k) for k in range(4)]
    sharded(tmp_path, records, 2, {1: 1})
    assert cli.main(["merge", str(tmp_path)]) == 1
    assert "shard 1 has recorded 1 of its 2 samples" in capsys.readouterr().err
    write_shard(tmp_path, 1, 2, shards.shard_samples(records, 1, 2))
    assert cli.main(["merge", str(tmp_path)]) == 0
    assert f"merged {tmp_path}: 4 samples" in capsys.readouterr().out
    assert json.loads((tmp_path / "results.json").read_text())["num_samples"] == 4


# --------------------------------------------------------------------------- sweeps: launch, status, collect

def manifest(sweep_dir, shard_counts: list[int]) -> None:
    jobs = [{"num": j, "overrides": [f"merger.ratio=0.{j + 1}"], "subdir": str(j), "merger": "aim", "pruner": "none",
             "method": "aim+none", "shards": n} for j, n in enumerate(shard_counts)]
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.json").write_text(json.dumps({"sweep_dir": str(sweep_dir), "task_overrides": [],
                                                      "hydra_overrides": [], "num_jobs": len(jobs), "jobs": jobs}))


def test_a_sharded_job_is_launched_as_one_task_per_shard_and_a_rerun_only_its_incomplete_shards(tmp_path):
    from aim.sweep import launch_list, read_manifest

    manifest(tmp_path, [1, 3])
    jobs = read_manifest(tmp_path)["jobs"]
    tasks, to_merge = launch_list(tmp_path, jobs, [(0, ["merger.ratio=0.1"]), (1, ["merger.ratio=0.2"])])
    assert tasks == [["merger.ratio=0.1"]] + [["merger.ratio=0.2", f"dataset.shard={i}", "hydra.sweep.subdir='1'"]
                                              for i in range(3)]
    assert to_merge == []
    records = [record(k) for k in range(5)]
    sharded(tmp_path / "1", records, 3, {1: 0})  # shards 0 and 2 complete
    tasks, _ = launch_list(tmp_path, jobs, [(1, ["merger.ratio=0.2", "hydra.sweep.subdir='1'"])], rerun=True)
    assert tasks == [["merger.ratio=0.2", "hydra.sweep.subdir='1'", "dataset.shard=1"]]
    write_shard(tmp_path / "1", 1, 3, shards.shard_samples(records, 1, 3))
    tasks, to_merge = launch_list(tmp_path, jobs, [(1, ["merger.ratio=0.2"])], rerun=True)
    assert tasks == [] and [j["num"] for j in to_merge] == [1]  # nothing to evaluate, only the merge


def test_status_counts_a_sharded_jobs_shards_and_collect_sees_one_row_per_run(tmp_path):
    from aim.analysis.collect import collect
    from aim.sweep import status

    manifest(tmp_path, [3, 2])
    records = [record(k) for k in range(8)]
    sharded(tmp_path / "0", records, 3, {2: 1})
    failed = shards.shard_dir(tmp_path / "0", 2) / "job.json"
    failed.write_text(json.dumps({"state": "failed", "error": "RuntimeError: out of memory", "attempt": 1}))
    rows = {r["num"]: r for r in status(tmp_path, query_scheduler=False)}
    assert rows[0]["state"] == "failed" and rows[0]["samples"] == 7
    assert rows[0]["detail"].startswith("2/3 shards done; shard 2 failed: RuntimeError: out of memory")
    assert rows[1]["state"] == "missing" and rows[1]["detail"].startswith("0/2 shards done")

    write_shard(tmp_path / "0", 2, 3, shards.shard_samples(records, 2, 3))
    row = status(tmp_path, query_scheduler=False)[0]
    assert row["state"] == "failed" and "3/3 shards done, not merged: python launch/sweep.py merge" in row["detail"]
    shards.merge(tmp_path / "0")
    row = status(tmp_path, query_scheduler=False)[0]
    assert (row["state"], row["detail"], row["samples"]) == ("done", "3/3 shards done, merged", 8)

    table = collect([tmp_path], roofline=False)
    assert list(table["job"]) == [0, 1] and list(table["status"]) == ["done", "missing"]
    assert table.loc[table["job"] == 0, "num_samples"].item() == 8
    # a run dir without a manifest: its merged results.json is its one row, not one per shard
    (tmp_path / "0" / "run_spec.json").write_text(json.dumps(CONFIG))
    table = collect([tmp_path / "0"], roofline=False)
    assert list(table["run"]) == ["."] and table["num_samples"].item() == 8


def test_a_merged_run_whose_every_sample_was_skipped_is_failed_not_done(tmp_path):
    """Every shard skipped every one of its samples: each shard's job.json says done (a shard is not failed for it),
    the merge writes results.json with num_samples 0 and the merging shard fails with NothingEvaluated, but status,
    collect and the report counted the run done, with a NaN score (the unsharded run is failed)."""
    from aim.analysis.collect import collect
    from aim.sweep import status

    manifest(tmp_path, [3, 2])
    sharded(tmp_path / "0", [record(k, skipped=True) for k in range(5)], 3)
    shards.merge(tmp_path / "0")
    sharded(tmp_path / "1", [record(k, skipped=k != 2) for k in range(4)], 2)  # one sample answered: a result
    shards.merge(tmp_path / "1")
    rows = {r["num"]: r for r in status(tmp_path, query_scheduler=False)}
    assert (rows[0]["state"], rows[0]["detail"]) == ("failed", (
        f"3/3 shards done, merged: every one of the 5 samples was skipped, nothing was evaluated (every reason in "
        f"{tmp_path / '0' / 'samples.jsonl'})"))
    assert (rows[1]["state"], rows[1]["detail"]) == ("done", "2/2 shards done, merged")
    table = collect([tmp_path], roofline=False)
    assert list(table["status"]) == ["failed", "done"] and table["detail"][0] == rows[0]["detail"]


def test_a_merged_results_json_that_cannot_be_read_is_failed_saying_merge_again(tmp_path):
    from aim.sweep import status

    manifest(tmp_path, [2])
    sharded(tmp_path / "0", [record(k) for k in range(4)], 2)
    shards.merge(tmp_path / "0")
    (tmp_path / "0" / "results.json").write_text('{"score": 0.5, "num_sam')
    [row] = status(tmp_path, query_scheduler=False)
    assert row["state"] == "failed" and row["detail"].startswith("2/2 shards done; merged results.json unreadable (")
    assert row["detail"].endswith(f"; merge again: python launch/sweep.py merge {tmp_path / '0'}")
    shards.merge(tmp_path / "0")
    assert status(tmp_path, query_scheduler=False)[0]["state"] == "done"


# ------------------------------------------------------------------------------------------- end to end

def results_without_timings(path):
    results = json.loads(path.read_text())
    for key in TIMINGS:
        results.pop(key, None)
    results["config"]["dataset"].pop("shards")  # what the run was asked: 3 shards, or one
    return results


def records_without_timings(path):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS} for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_a_run_in_three_local_shards_gives_the_unsharded_runs_records_and_results(tmp_path, bundled_env):
    def aim_run(out, *overrides):  # one thread each: the two runs side by side on a small machine
        return subprocess.Popen([sys.executable, "-m", "aim.run", f"hydra.run.dir={out}", f"dataset.num_samples={NUM_SAMPLES}",
                                 "dataset.limit=5", "eval.progress=false", "logger=none", *overrides],
                                env={**bundled_env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)

    one, three = tmp_path / "one", tmp_path / "three"
    runs = [aim_run(one), aim_run(three, "dataset.shards=3")]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (_, err) in zip(runs, outputs):
        assert run.returncode == 0, err[-3000:]
    assert "merged 3 shards into" in outputs[1][0]
    assert records_without_timings(three / "samples.jsonl") == records_without_timings(one / "samples.jsonl")
    assert results_without_timings(three / "results.json") == results_without_timings(one / "results.json")
    assert json.loads((three / "results.json").read_text())["config"]["dataset"]["shards"] == 3
    # its throughput adds up the shards': every sample evaluated once, over the three shards' seconds
    assert json.loads((three / "results.json").read_text())["throughput"]["samples"] == 5
    ids = [json.loads(line)["id"] for line in (one / "samples.jsonl").read_text().splitlines()]
    for i in range(3):  # each shard evaluated its own samples, once
        assert [json.loads(line)["id"] for line in (three / "shards" / str(i) / "samples.jsonl").read_text().splitlines()] \
            == ids[i::3]
    assert json.loads((three / "job.json").read_text())["state"] == "done"
    # the run dir holds a 3-shard run: an unsharded rerun there is refused, not mixed in
    proc = run_in_process("aim.run", f"hydra.run.dir={three}", f"dataset.num_samples={NUM_SAMPLES}", "dataset.limit=5",
                          "logger=none", env=bundled_env)  # `python -m aim.run ...` in this process (tests/in_process.py)
    assert proc.returncode == 2 and "dataset.shards" in proc.stderr
