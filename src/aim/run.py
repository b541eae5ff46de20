"""The main job: compose the config -> validate it -> build model, data, merger, pruner -> evaluate ->
write results.json (and mirror to W&B).

    python -m aim.run                                  # bundled model and benchmark, default method
    python -m aim.run merger=none pruner=none          # the unreduced model
    python -m aim.run hydra.run.dir=outputs/runs/X     # rerun in X: resumes where it stopped
    python -m aim.run +exp=ablation_layers             # a sweep (conf/exp/; aim.sweep validates it first)
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from aim.config import ConfigError, Validated, check_weights, validate
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
    path = out_dir / RUN_SPEC
    if path.exists():
        old = json.loads(path.read_text())
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
    while checking the config (built here when not given)."""
    import torch

    from aim.data import build_dataset
    from aim.eval import evaluate
    from aim.eval.fidelity import build_fidelity
    from aim.merging import MERGERS
    from aim.models import MODELS
    from aim.pruning import PRUNERS
    from aim.tracking.records import SampleRecords
    from aim.tracking.results import print_summary, summarize, write_results
    from aim.tracking.wandb_logger import make_logger

    if dataset is None:
        dataset = build_dataset(valid.dataset)  # a questions file that cannot be read, or no samples: ConfigError
    config = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(valid.seed)
    adapter = MODELS.get(valid.model.name).from_config(**asdict(valid.model))
    merger = MERGERS.build(valid.merger.name, **asdict(valid.merger))
    pruner = PRUNERS.build(valid.pruner.name, **asdict(valid.pruner))
    records = SampleRecords(out_dir / "samples.jsonl")
    fidelity = build_fidelity(valid)
    method = {"merger": valid.merger.name, "pruner": valid.pruner.name}
    logger = make_logger(valid.logger, out_dir, config, method, group=sweep_name())
    try:
        evaluate(
            adapter, dataset, merger, pruner, records, mode=valid.eval.mode,
            max_new_tokens=valid.eval.max_new_tokens, progress=valid.eval.progress, on_record=logger.log_progress,
            fidelity=fidelity, per_sample=budget.sample_budget() if budget is not None else None,
            batch_size=valid.eval.batch_size, num_workers=valid.loading.num_workers,
        )
    finally:
        records.close()
    wanted = {s.id for s in dataset}  # a rerun with a smaller dataset.limit summarizes only those
    evaluated = [r for r in records.records if r["id"] in wanted]
    summary = summarize(evaluated, method, config)
    summary["records_dropped"] = records.dropped  # unreadable samples.jsonl lines, in samples.jsonl.dropped
    if budget is not None:
        summary["budget"] = budget.record(evaluated)
    write_results(out_dir / "results.json", summary)
    logger.finish(summary, evaluated)
    print_summary(summary, out_dir)
    if fidelity is not None:
        print(f"unreduced answers: {fidelity.cache.path} ({fidelity.computed} computed by this run)")
    if not summary["num_samples"]:
        raise NothingEvaluated(evaluated, out_dir / "samples.jsonl")
    return summary


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
    from aim.tracking.rundir import RunDirBusy, RunDirLock

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        valid = validate(cfg)
        check_weights(valid)
        budget = apply_budget(cfg, valid)  # budget mode: the chosen knobs written into cfg before anything is built
        if budget is not None:
            valid = validate(cfg)
            print_choice(budget.record())
        dataset = build_dataset(valid.dataset)  # the questions file read and the selection checked: before any run dir change
        spec = result_spec(cfg)
        check_resume(out_dir, spec)  # before the lock: a refused rerun does not even make run.lock
        with RunDirLock(out_dir, wait=valid.run.wait_for_lock):
            check_resume(out_dir, spec)  # again: the process that held the lock may have started a run here
            start_run(cfg, out_dir, spec)
            summary = run(cfg, valid, out_dir, budget, dataset)
    except ConfigError as exc:
        mark_ended(out_dir, exc)
        print(f"aim: invalid config: {exc}", file=sys.stderr)
        sys.exit(2)
    except NothingEvaluated as exc:
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
