"""The main job: compose the config -> validate it -> build model, data, merger, pruner -> evaluate ->
write results.json (and mirror to W&B).

    python -m aim.run                                  # bundled model and benchmark, default method
    python -m aim.run merger=none pruner=none          # the unreduced model
    python -m aim.run hydra.run.dir=outputs/runs/X     # rerun in X: resumes where it stopped
    python -m aim.run +exp=ablation_layers             # a sweep (conf/exp/; aim.sweep validates it first)
    python -m aim.run dataset.shards=3 hydra.run.dir=D # 3 shards in turn into D/shards/<i>, merged into D

Sharded runs (`dataset.shards=N`, aim.tracking.shards). Without `dataset.shard`, this process runs the N
shards one after another, each exactly as its SLURM array task would (its own seed, model and records), then
merges them: on one machine there is one accelerator, and N processes side by side would each hold a copy
of the model on it and share its compute, for no gain and with N processes to supervise; running the shards
in parallel is what the SLURM launcher is for. With `dataset.shard=i` (set by the sweeper for each array task,
or by a user's own array script), it evaluates shard i, and the last shard to finish merges.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from aim.config import (ConfigError, Validated, check_device, check_fidelity_cache, check_knobs_read, check_logger,
                        check_weights, validate)
from aim.paths import CONF_DIR

RUN_SPEC = "run_spec.json"


def result_spec(cfg: DictConfig) -> dict:
    """The part of the config that determines each sample's result: not logging, progress display, the
    fidelity measurement, how the run dir is shared, how many samples to evaluate (a rerun may extend
    `dataset.limit`), or the throughput knobs (`eval.batch_size`, `dataset.num_workers`: a rerun may change
    them and resume)."""
    spec = OmegaConf.to_container(cfg, resolve=True)
    for key in ("logger", "run", "fidelity"):  # fidelity adds measurements, changes no result
        spec.pop(key, None)
    for group, key in (("eval", "progress"), ("eval", "batch_size"), ("dataset", "limit"), ("dataset", "num_workers")):
        spec.get(group, {}).pop(key, None)
    return spec


def check_resume(out_dir: Path, spec: dict) -> None:
    """A rerun in an existing output dir must ask for the same results, or its records would mix. Reads only:
    a refused rerun leaves the dir as it was."""
    from aim.tracking.rundir import read_json

    old, damaged = read_json(out_dir / RUN_SPEC)
    if damaged:
        raise ConfigError(f"{out_dir}: {damaged}: the config of the run it holds cannot be checked; restore it, or "
                          "use another hydra.run.dir")
    samples = out_dir / "samples.jsonl"
    if old is None and samples.exists() and samples.stat().st_size:
        # a run dir of an older format (before run_spec.json), or one whose run_spec.json was removed: its
        # records' config is unknown, and resuming would mix them with this config's
        raise ConfigError(f"{out_dir} holds samples.jsonl but no {RUN_SPEC}, so the config of its records cannot be "
                          "checked; use another hydra.run.dir, or move samples.jsonl aside to start over")
    if old is not None:
        if old != spec:
            diffs = sorted(_diff(old, spec))
            raise ConfigError(
                f"{out_dir} holds a run with a different config ({', '.join(diffs)}); "
                "use another hydra.run.dir or the same overrides to resume"
            )


def start_run(cfg: DictConfig, out_dir: Path, spec: dict) -> None:
    """Once every check has passed and the dir's lock is held: run_spec.json, what Hydra's output_subdir
    would have written (.hydra/, turned off in conf/config.yaml so that a refused run writes nothing), and
    job.json `running`."""
    from aim.sweep import mark_running

    (out_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    if not (out_dir / RUN_SPEC).exists():
        (out_dir / RUN_SPEC).write_text(json.dumps(spec, indent=2))
    hydra_cfg = HydraConfig.get()
    OmegaConf.save(cfg, out_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), out_dir / ".hydra" / "hydra.yaml")
    OmegaConf.save(hydra_cfg.overrides.task, out_dir / ".hydra" / "overrides.yaml")
    mark_running(out_dir, hydra_cfg.overrides.task)


def _diff(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            yield from _diff(a.get(k), b.get(k), f"{prefix}{k}.")
    elif a != b:
        yield prefix.rstrip(".")


def sweep_name() -> str | None:
    """The sweep dir's name when this job is part of a multirun (its W&B group), else None."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


def run(cfg: DictConfig, valid: Validated, out_dir: Path, budget=None, dataset=None) -> dict:
    """`budget`: the aim.budget.BudgetPlan that chose this config's knobs (its record goes into results.json
    as `budget`; with budget.per_sample it chooses each sample's own), or None. `dataset`: the one main built
    while checking the config (built here when not given; a shard's own samples for a shard). A shard
    (`dataset.shards` > 1) writes its shard.json first, logs nothing to W&B (the merged run does) and is not
    failed for having no answered sample (the merged run may have some)."""
    import torch

    from aim.data import build_dataset
    from aim.eval import evaluate
    from aim.eval.fidelity import build_fidelity
    from aim.merging import MERGERS
    from aim.models import MODELS
    from aim.pruning import PRUNERS
    from aim.tracking import shards
    from aim.tracking.records import SampleRecords
    from aim.tracking.results import print_summary, summarize, throughput, write_results
    from aim.tracking.wandb_logger import NullLogger, make_logger

    sharded = valid.sharding.shards > 1
    if dataset is None:
        dataset = build_dataset(valid.dataset)  # a questions file that cannot be read, or no samples: ConfigError
        if sharded:
            dataset = shards.shard_samples(dataset, valid.sharding.shard, valid.sharding.shards)
    config = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(valid.seed)
    adapter = MODELS.get(valid.model.name).from_config(**asdict(valid.model))
    merger = MERGERS.build(valid.merger.name, **asdict(valid.merger))
    pruner = PRUNERS.build(valid.pruner.name, **asdict(valid.pruner))
    records = SampleRecords(out_dir / "samples.jsonl")
    fidelity = build_fidelity(valid)
    method = {"merger": valid.merger.name, "pruner": valid.pruner.name}
    if sharded:
        shards.write_plan(out_dir, valid.sharding.shard, valid.sharding.shards, [s.id for s in dataset], method,
                          run_config(config))
    logger = NullLogger() if sharded else make_logger(valid.logger, out_dir, config, method, group=sweep_name())
    before, started = len(records.records), time.perf_counter()
    try:
        evaluate(
            adapter, dataset, merger, pruner, records, mode=valid.eval.mode,
            max_new_tokens=valid.eval.max_new_tokens, progress=valid.eval.progress, on_record=logger.log_progress,
            fidelity=fidelity, per_sample=budget.sample_budget() if budget is not None else None,
            batch_size=valid.eval.batch_size, num_workers=valid.loading.num_workers,
        )
    finally:
        records.close()
    seconds, new = time.perf_counter() - started, len(records.records) - before
    wanted = {s.id for s in dataset}  # a rerun with a smaller dataset.limit summarizes only those
    evaluated = [r for r in records.records if r["id"] in wanted]
    summary = summarize(evaluated, method, config)
    summary["records_dropped"] = records.dropped  # unreadable samples.jsonl lines, in samples.jsonl.dropped
    summary["throughput"] = throughput(new, seconds)
    if budget is not None:
        summary["budget"] = budget.record(evaluated)
    write_results(out_dir / "results.json", summary)
    logger.finish(summary, evaluated)
    print_summary(summary, out_dir)
    if fidelity is not None:
        print(f"unreduced answers: {fidelity.cache.path} ({fidelity.computed} computed by this run)")
    if not summary["num_samples"] and not sharded:
        raise NothingEvaluated(evaluated, out_dir / "samples.jsonl")
    return summary


def run_config(config: dict) -> dict:
    """A shard's config as its whole run's: `dataset.shard` unset (the run is every shard)."""
    dataset = config.get("dataset") or {}
    return {**config, "dataset": {**dataset, "shard": None}} if "shard" in dataset else config


def report_merged(valid: Validated, run_dir: Path, summary: dict, records: list[dict]) -> dict:
    """The merged run's summary printed and mirrored to W&B, as an unsharded run's; NothingEvaluated when
    every sample of every shard was skipped."""
    from aim.tracking.results import print_summary
    from aim.tracking.wandb_logger import make_logger

    make_logger(valid.logger, run_dir, summary["config"], summary["method"], group=sweep_name()).finish(summary, records)
    print(f"merged {valid.sharding.shards} shards into {run_dir}")
    print_summary(summary, run_dir)
    if not summary["num_samples"]:
        raise NothingEvaluated(records, run_dir / "samples.jsonl")
    return summary


def evaluate_in(cfg: DictConfig, valid: Validated, work_dir: Path, dataset, budget=None) -> dict:
    """`run` in `work_dir` (a run dir, or a shard's) holding its lock, with its run_spec checked and job.json
    running, then done (or failed with the error)."""
    from aim.sweep import mark_ended
    from aim.tracking.rundir import RunDirLock

    spec = result_spec(cfg)
    check_resume(work_dir, spec)  # before the lock: a refused rerun does not even make run.lock
    with RunDirLock(work_dir, wait=valid.run.wait_for_lock):
        check_resume(work_dir, spec)  # again: the process that held the lock may have started a run here
        start_run(cfg, work_dir, spec)
        if work_dir == Path(HydraConfig.get().runtime.output_dir):
            return run(cfg, valid, work_dir, budget, dataset)  # its job.json is ended by the JobState callback
        try:  # a shard's dir: not the job's output dir, which the callback ends
            summary = run(cfg, valid, work_dir, budget, dataset)
        except Exception as exc:
            mark_ended(work_dir, exc)
            raise
        mark_ended(work_dir)
    return summary


def run_sharded(cfg: DictConfig, valid: Validated, out_dir: Path, dataset) -> dict:
    """`dataset.shards=N`: with `dataset.shard` set, evaluate that shard into out_dir/shards/<i> and merge if
    it was the last to finish; unset, evaluate every shard here in turn, then merge. Returns the merged
    summary, or the shard's own while other shards still run."""
    from aim.tracking import shards

    n, mine = valid.sharding.shards, valid.sharding.shard
    spec = result_spec(cfg)
    run_spec = {**spec, "dataset": {**spec["dataset"], "shard": None}}  # the whole run's: every shard's
    check_resume(out_dir, run_spec)  # the run dir must not hold another run (an unsharded one, other shards)
    if mine is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not (out_dir / RUN_SPEC).exists():
            tmp = out_dir / f"{RUN_SPEC}.{mine}.tmp"  # the shards of a run may start together: each its own tmp
            tmp.write_text(json.dumps(run_spec, indent=2))
            tmp.replace(out_dir / RUN_SPEC)
        summary = evaluate_in(cfg, valid, shards.shard_dir(out_dir, mine), shards.shard_samples(dataset, mine, n))
        merged = shards.merge_if_complete(out_dir)
        if merged is None:
            waiting = [r["shard"] for r in shards.progress(out_dir, n) if not r["complete"]]
            print(f"shard {mine} of {n} done; the merge into {out_dir} waits for shards {waiting} "
                  "(the last to finish merges)")
            return summary
        return report_merged(valid, out_dir, *merged)
    from aim.tracking.rundir import RunDirLock

    with RunDirLock(out_dir, wait=valid.run.wait_for_lock):
        check_resume(out_dir, run_spec)
        start_run(cfg, out_dir, run_spec)
        for i in range(n):
            shard_cfg = OmegaConf.merge(cfg, {"dataset": {"shard": i}})
            shard_valid = replace(valid, sharding=replace(valid.sharding, shard=i))
            print(f"shard {i} of {n}: {shards.shard_dir(out_dir, i)}")
            evaluate_in(shard_cfg, shard_valid, shards.shard_dir(out_dir, i), shards.shard_samples(dataset, i, n))
        return report_merged(valid, out_dir, *shards.merge(out_dir))


class NothingEvaluated(RuntimeError):
    """Every sample of the run was skipped: its score would be NaN, so the run fails (exit 1)."""

    def __init__(self, skipped: list[dict], path: Path):
        reasons = "; ".join(f"{r['id']}: {r.get('error')}" for r in skipped[:3])
        super().__init__(f"every one of the {len(skipped)} samples was skipped, nothing was evaluated "
                         f"(first: {reasons}; every reason in {path})")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | list[float]:
    from aim.budget import apply_budget, print_choice
    from aim.data import build_dataset
    from aim.sweep import mark_ended
    from aim.tracking.rundir import RunDirBusy
    from aim.tracking.shards import IncompleteShards

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        valid = validate(cfg)
        if HydraConfig.get().mode != RunMode.MULTIRUN:  # a sweep's knobs were checked across its jobs (plan_jobs)
            check_knobs_read(valid, "aim.run", HydraConfig.get().overrides.task)
        check_logger(valid)
        check_device(valid)
        check_fidelity_cache(valid)
        check_weights(valid)
        budget = apply_budget(cfg, valid)  # budget mode: the chosen knobs written into cfg before anything is built
        if budget is not None:
            valid = validate(cfg)
            print_choice(budget.record())
        dataset = build_dataset(valid.dataset)  # the questions file read and the selection checked: before any run dir change
        if valid.sharding.shards > 1:  # (budget mode is refused with shards by validate)
            if valid.sharding.shards > len(dataset):
                raise ConfigError(f"dataset.shards: {valid.sharding.shards} shards of {len(dataset)} samples would "
                                  f"leave some empty; use at most {len(dataset)}")
            summary = run_sharded(cfg, valid, out_dir, dataset)
        else:
            summary = evaluate_in(cfg, valid, out_dir, dataset, budget)
    except ConfigError as exc:
        mark_ended(out_dir, exc)
        print(f"aim: invalid config: {exc}", file=sys.stderr)
        sys.exit(2)
    except (NothingEvaluated, IncompleteShards) as exc:
        mark_ended(out_dir, exc)
        print(f"aim: {exc}", file=sys.stderr)
        sys.exit(1)
    except RunDirBusy as exc:
        print(f"aim: {exc}", file=sys.stderr)
        sys.exit(3)
    from aim.tradeoff import task_return

    # what a Hydra sweeper optimises: the accuracy, or [search.objective, tflops] for a trade-off search
    return task_return(cfg, summary)


if __name__ == "__main__":
    main()
