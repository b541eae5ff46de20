"""Sharded runs: one evaluation split into N shards, and the one merge that turns them into the run's own
records and summary.

Shard i of N evaluates samples i, i+N, i+2N, ... of the dataset (after `dataset.limit`) into its own run dir,
`<run dir>/shards/<i>/`, with everything a run dir holds (samples.jsonl, resumable as any run's; its lock,
job.json, run_spec.json) and `shard.json`: its index, N, the ids it must record in dataset order, and the
run's method and config. `merge` reads only those files (no dataset, no model), so it runs anywhere: in the
last shard to finish, or by hand (`python launch/sweep.py merge DIR`). It refuses while any shard lacks a
record, and otherwise writes `<run dir>/samples.jsonl` (the records in dataset order: record k of shard i is
sample i + kN) and `results.json`, summarised from them as an unsharded run summarises its own.

Why the last shard merges, not a job that depends on the array: a shard that is requeued (preempted, timed
out, killed) finishes later, and whichever shard finishes last sees every record, so the merge happens once
all are in, however often any of them was requeued, with no extra job to submit, cancel or requeue. Shards
take `merge.lock` while they check and merge, and the merge is idempotent (the same files from the same
records), so two shards finishing together merge once or twice, never a partial run.
"""
from __future__ import annotations

import fcntl
import json
import os
import warnings
from pathlib import Path

from aim.tracking.records import count_dropped, read_samples
from aim.tracking.rundir import read_json

SHARDS_DIR = "shards"
SHARD_PLAN = "shard.json"
MERGE_LOCK = "merge.lock"
SAMPLES = "samples.jsonl"
RESULTS = "results.json"


class IncompleteShards(RuntimeError):
    """The merge was asked for before every shard had recorded every one of its samples; the message says
    which shards lack how many."""


def shard_dir(run_dir: str | Path, shard: int) -> Path:
    return Path(run_dir) / SHARDS_DIR / str(shard)


def is_shard_dir(path: str | Path) -> bool:
    """A shard's own run dir (`<run dir>/shards/<i>/` with its shard.json): not a run of its own."""
    path = Path(path)
    return path.parent.name == SHARDS_DIR and (path / SHARD_PLAN).exists()


def shard_samples(samples, shard: int, shards: int) -> list:
    """Shard `shard` of `shards`: samples shard, shard + shards, shard + 2 shards, ... in dataset order."""
    return list(samples)[shard::shards]


def write_plan(directory: str | Path, shard: int, shards: int, ids: list[str], method: dict, config: dict) -> None:
    """The shard's shard.json (written before it evaluates): what the merge needs from it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomic(directory / SHARD_PLAN, json.dumps(
        {"shard": shard, "shards": shards, "ids": list(ids), "method": method, "config": config}, indent=2).encode())


def read_plan(directory: str | Path) -> dict | None:
    """A shard's plan, None before it started; IncompleteShards naming the file when it cannot be read (aim.run
    writes it atomically, so only something else damages it: rerunning that shard writes it again)."""
    plan, damaged = read_json(Path(directory) / SHARD_PLAN)
    if plan is not None and not {"shard", "shards", "ids", "config"} <= set(plan):
        damaged = f"{SHARD_PLAN} unreadable (not a shard plan)"
    if damaged:
        raise IncompleteShards(f"{directory}: {damaged}; rerun that shard (it resumes and writes its plan again), "
                               "then merge")
    return plan


def num_shards(run_dir: str | Path) -> int | None:
    """N of the shards under a run dir (from any shard's plan), None when no shard has started."""
    for path in sorted((Path(run_dir) / SHARDS_DIR).glob(f"*/{SHARD_PLAN}")):
        return read_plan(path.parent)["shards"]
    return None


def progress(run_dir: str | Path, shards: int | None = None) -> list[dict]:
    """Each shard's progress: {shard, started (shard.json written), recorded, expected (None before it
    started), complete}, and `problem` for a shard whose plan cannot be read (not complete). `shards`: N when known (a shard that never started has no plan to say it)."""
    shards = shards or num_shards(run_dir) or 0
    rows = []
    for i in range(shards):
        directory = shard_dir(run_dir, i)
        try:
            plan = read_plan(directory)
        except IncompleteShards as exc:  # not complete: a resubmit reruns it, which writes its plan again
            rows.append({"shard": i, "started": True, "recorded": 0, "expected": None, "complete": False,
                         "problem": str(exc)})
            continue
        recorded = {r["id"] for r in read_samples(directory / SAMPLES).records}
        expected = None if plan is None else len(plan["ids"])
        done = 0 if plan is None else sum(1 for sample_id in plan["ids"] if sample_id in recorded)
        rows.append({"shard": i, "started": plan is not None, "recorded": done, "expected": expected,
                     "complete": plan is not None and done == expected})
    return rows


def merged_records(run_dir: str | Path) -> tuple[list[bytes], list[dict], dict]:
    """The shards' records in dataset order (raw lines and parsed), and shard 0's plan; IncompleteShards
    unless every shard of the run has recorded every one of its samples."""
    run_dir = Path(run_dir)
    shards = num_shards(run_dir)
    if shards is None:
        raise IncompleteShards(f"{run_dir}: no shard has started (no {SHARDS_DIR}/<i>/{SHARD_PLAN})")
    plans, by_id, problems = [], [], []
    for i in range(shards):
        directory = shard_dir(run_dir, i)
        plan = read_plan(directory)
        if plan is None:
            problems.append(f"shard {i} has not started")
            plans.append(None)
            by_id.append({})
            continue
        if plan["shards"] != shards or plan["shard"] != i:
            raise IncompleteShards(f"{directory}: its {SHARD_PLAN} says shard {plan['shard']} of {plan['shards']}, "
                                   f"not {i} of {shards}: shards of different runs in one run dir")
        found = read_samples(directory / SAMPLES)
        lines = {r["id"]: (line, r) for line, r in zip(found.lines, found.records)}
        missing = [sample_id for sample_id in plan["ids"] if sample_id not in lines]
        if missing:
            problems.append(f"shard {i} has recorded {len(plan['ids']) - len(missing)} of its {len(plan['ids'])} "
                            f"samples (first missing: {missing[0]})")
        plans.append(plan)
        by_id.append(lines)
    if problems:
        raise IncompleteShards(f"{run_dir}: cannot merge, {len(problems)} of {shards} shards are incomplete: "
                               + "; ".join(problems) + ". Rerun those shards (they resume) and merge again")
    if any(p["config"] != plans[0]["config"] for p in plans):
        raise IncompleteShards(f"{run_dir}: its shards were run with different configs; they cannot be merged")
    lines, records = [], []
    for k in range(max(len(p["ids"]) for p in plans)):  # record k of shard i is sample i + k * shards
        for plan, found in zip(plans, by_id):
            if k < len(plan["ids"]):
                line, record = found[plan["ids"][k]]
                lines.append(line)
                records.append(record)
    return lines, records, plans[0]


def merge(run_dir: str | Path) -> tuple[dict, list[dict]]:
    """Write `<run dir>/samples.jsonl` and `results.json` from complete shards, exactly as the unsharded run
    would have written them (same records in dataset order, same summary; timings are the shards' own);
    return (summary, records). IncompleteShards, writing nothing, while any shard lacks a record."""
    from aim.tracking.results import summarize, write_results

    run_dir = Path(run_dir)
    lines, records, plan = merged_records(run_dir)
    summary = summarize(records, plan["method"], plan["config"])
    summary["records_dropped"] = sum(count_dropped(shard_dir(run_dir, i) / SAMPLES) for i in range(plan["shards"]))
    summary["throughput"] = shards_throughput(run_dir, plan["shards"])
    _write_atomic(run_dir / SAMPLES, b"".join(line + b"\n" for line in lines))
    write_results(run_dir / RESULTS, summary)
    return summary, records


def shards_throughput(run_dir: Path, shards: int) -> dict:
    """The shards' throughputs summed (each shard's results.json holds its last invocation's): samples and
    evaluation seconds added up, so samples_per_s is one worker's rate, whether the shards ran in turn or
    side by side."""
    from aim.tracking.results import throughput

    samples = seconds = 0
    unreadable = []
    for i in range(shards):
        results, damaged = read_json(shard_dir(run_dir, i) / RESULTS)
        if damaged:  # its records are merged all the same; only its timing is lost
            warnings.warn(f"{shard_dir(run_dir, i)}: {damaged}; the merged throughput leaves shard {i} out")
            unreadable.append(i)
            continue
        speed = (results or {}).get("throughput") or {}
        samples, seconds = samples + speed.get("samples", 0), seconds + speed.get("wall_s", 0.0)
    return {**throughput(samples, seconds), "shards": shards, **({"shards_left_out": unreadable} if unreadable else {})}


def merge_if_complete(run_dir: str | Path) -> tuple[dict, list[dict]] | None:
    """What a shard does when it has recorded its last sample: under the run dir's merge lock, merge if every
    shard is complete (this one was the last), else return None (a shard still running merges when it ends)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / MERGE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when closed, or when the process dies
        shards = num_shards(run_dir)
        if shards is None or not all(row["complete"] for row in progress(run_dir, shards)):
            return None
        return merge(run_dir)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
