"""Automatic trade-off search (issue #11): multi-objective search over the reduction settings, the Pareto set
written for budget mode.

    python -m aim.run +exp=search_tradeoff -m            # NSGA-II over merge ratio, pruner, l1, l2 (or k, keep)
    python -m aim.search outputs/sweeps/<time>           # (re)write <sweep dir>/tradeoff.json, print the Pareto set
    python -m aim.search outputs/sweeps/<time> --against outputs/sweeps/<grid>   # the search vs a hand-written grid

Design. The search sweeper (set in conf/exp/search_tradeoff.yaml; the plugin class is a thin shell in
src/hydra_plugins/aim_optuna_sweeper/, the logic is `TradeoffSearch` here) drives an Optuna study with two
objectives: maximize `search.objective` (`accuracy`, or `agreement`, the fidelity to the unreduced model, which
needs no labels) and minimize `tflops` (fvcore, LLM prefill per sample), each job on a
calibration subset (`dataset.limit`). It reads the search space as hydra-optuna-sweeper does (`params`:
`choice(...)`, `int(interval(a, b))`, `tag(log, interval(a, b))`; note that `range(a, b)` includes b there)
and uses its samplers (NSGA-II by default), with these differences, each for a reason:

- **Every trial is a valid config, by construction.** Optuna samples each parameter on its own, and NSGA-II's
  crossover copies a parent's value without checking it against a range that depends on another parameter, so
  a conditional range (l2 in (l1, L]) can still yield l2 <= l1. Hence `offsets`: `{pruner.l2: pruner.l1}` means
  the value sampled for `pruner.l2` is a gap added to `pruner.l1` (l2 = l1 + gap, gap >= 1), so l1 < l2
  always holds and every parameter keeps one fixed distribution. With a group choice searched
  (`pruner: choice(aim, fastv, none)`) or fixed (`pruner=none` on the command line), a sampled
  `pruner.<field>` goes only to the trials whose pruner has that field (l1/l2 to aim, k/keep to fastv, nothing
  to none); a field that no registered pruner has (a typo) is passed on, so that validation names it.
- **Nothing invalid is launched.** Before the first trial, the search space's corners (every choice of the
  categorical parameters, with all numeric parameters at their lows, then at their highs) are composed and
  validated (`aim.config.validate`); one bad corner stops the search, naming the setting and the field, before
  any job exists. Each batch is composed and validated again before it is launched (`aim.sweep.plan_jobs`).
- **`sweep.json` grows with the search**: the jobs of each batch are added before the batch is launched, so
  `launch/sweep.py status`, `resubmit` (`hydra.sweeper.rerun`) and `analysis/collect.py` see a search sweep as
  any other sweep.
- **Known settings can seed the search** (`enqueue`: settings in config terms, run first; e.g. the default
  job's, or the paper's for a 7B model), as Optuna's `enqueue_trial` does, each checked to lie in the space.
- **Each job is a new setting.** NSGA-II often proposes a setting again (its crossover copies parents' values,
  and the fields that a trial's pruner lacks do not matter): such a proposal is told the values already
  measured and another is asked for, so `n_trials` counts jobs, i.e. distinct settings evaluated.
- **A failed trial does not end the search** (it is told to the study as failed, and the search goes on); a
  batch in which every trial failed does, and the command exits non-zero when any trial failed, after
  `tradeoff.json` is written.
- **`tradeoff.json`** (the Pareto set that budget mode reads) is written from the sweep dir's `results.json`
  files after every batch and at the end (and by `python -m aim.search SWEEP_DIR`), not from the study, so
  resubmitted jobs and a study kept in memory only give the same file.

`tradeoff.json`'s format, the task's return and the Pareto tables are in `aim.tradeoff` (a library module: aim.run
and the analysis import it, not this module, whose `main` is a command line).
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from aim.config import BUDGET_LIMITS, OBJECTIVES
from aim.sweep import SweepError
from aim.tradeoff import (COST, TRADEOFF, SearchError, compare, compare_markdown, format_rows, pareto_rows, search_config,
                          tradeoff, write_tradeoff)

GROUP_FIELD_GROUPS = ("merger", "pruner")  # groups whose fields follow the group's searched choice
MAX_ASKS_PER_JOB = 50  # proposals of settings already run, per job of a batch, before the search stops

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- the search space

@dataclass
class GroupFields:
    """What a searched `<group>.<field>` needs to know about its group: the fields of each option the search
    can pick (searched choices, or the one fixed choice), that fixed choice, and every field any registered
    plugin of the family has (a field outside those is a typo, passed on so that validation names it)."""

    options: dict[str, set[str]]
    fixed_choice: str | None
    known: set[str]


def registered_fields(group: str) -> set[str]:
    """Every config field of every registered plugin of a family (merger, pruner)."""
    import dataclasses

    from aim.merging import MERGERS
    from aim.pruning import PRUNERS

    registry = {"merger": MERGERS, "pruner": PRUNERS}[group]
    out = set()
    for name in registry.names():
        schema = registry.config_schema(name)
        if schema is not None:
            out |= {f.name for f in dataclasses.fields(schema)}
    return out


def option_fields(loader, master: DictConfig, group: str, options: Sequence[str], fixed: Sequence[str] = ()
                  ) -> dict[str, set[str]]:
    """The fields of each option of a config group, as a job composes it (with the sweep's fixed overrides)."""
    return {str(o): set(loader.load_sweep_config(master, [*fixed, f"{group}={o}"])[group].keys()) for o in options}


def import_optuna():
    """optuna, imported without alembic's start-up log lines (they would show in a sweep's log at INFO) and
    without SQLAlchemy 2's deprecation warning about optuna 2.10's database models."""
    quiet = logging.getLogger("alembic")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():  # optuna 2.10's database models use an API SQLAlchemy 2 moved
            warnings.simplefilter("ignore", DeprecationWarning)
            import optuna
    finally:
        quiet.setLevel(level)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweeper logs each batch itself
    return optuna


def assignment_overrides(values: dict[str, Any], fixed: Sequence[str], offsets: dict[str, str],
                         fields: dict[str, GroupFields]) -> list[str]:
    """One job's override list from sampled values: offsets added to their base; a `<group>.<field>` that the
    trial's option of that group lacks, but another plugin of the family has, dropped (fastv's k for a trial
    that chose aim); the sweep's fixed overrides (the command line's) last, as the user wrote them."""
    values = dict(values)
    for key, base in offsets.items():
        if key in values and base in values:
            values[key] = values[key] + values[base]
    out = []
    for key, value in values.items():
        group, _, name = key.partition(".")
        info = fields.get(group)
        if info is not None and name:
            chosen = str(values[group]) if group in values else info.fixed_choice
            if name not in info.options.get(chosen, set()) and name in info.known:
                continue
        out.append(f"{key}={value}")
    return out + list(fixed)


def corners(distributions: dict) -> list[dict[str, Any]]:
    """The search space's corners: every combination of the categorical choices, with all numeric
    parameters at their lows, then all at their highs (the bounds are what a config range check catches)."""
    from optuna.distributions import CategoricalDistribution

    categorical = {k: d.choices for k, d in distributions.items() if isinstance(d, CategoricalDistribution)}
    numeric = {k: d for k, d in distributions.items() if k not in categorical}
    out = []
    for combo in itertools.product(*categorical.values()) if categorical else [()]:
        chosen = dict(zip(categorical, combo))
        for end in ("low", "high"):
            point = dict(chosen)
            for k, d in numeric.items():
                point[k] = getattr(d, end)
            out.append({k: point[k] for k in distributions})  # in the params' order
            if not numeric:
                break
    return out


def distribution_text(d) -> str:
    name = type(d).__name__.replace("Distribution", "")
    if hasattr(d, "choices"):
        return f"{name}{list(d.choices)}"
    step = getattr(d, "step", None) or getattr(d, "q", None)
    return f"{name}[{d.low}, {d.high}" + (f", step {step}" if step not in (None, 1) else "") + "]"


# ------------------------------------------------------------------------------------- sweep.json

def extend_manifest(sweep_dir: Path, master: DictConfig, jobs: list[dict], search: dict) -> dict:
    """Add a batch's jobs to `sweep.json` (made with the first batch). A job number already listed must have
    the same overrides (the same search launched again into its dir resumes its jobs). A sweep.json that cannot be
    read is a SweepError naming it (aim.sweep.read_manifest), on which the search stops before the batch."""
    from aim.sweep import MANIFEST, SweepError, read_manifest, write_manifest

    path = Path(sweep_dir) / MANIFEST
    if not path.exists():
        manifest = write_manifest(sweep_dir, master, jobs)
        manifest["search"] = search
    else:
        manifest = read_manifest(sweep_dir)
        listed = {j["num"]: j for j in manifest["jobs"]}
        for job in jobs:
            old = listed.get(job["num"])
            if old is not None and (old["overrides"], old["subdir"]) != (job["overrides"], job["subdir"]):
                raise SweepError(f"aim: {path} lists another job {job['num']} ({' '.join(old['overrides'])}); "
                                 "nothing was launched; use another hydra.sweep.dir")
            listed[job["num"]] = job
        manifest["jobs"] = [listed[n] for n in sorted(listed)]
        manifest["num_jobs"] = len(manifest["jobs"])
        manifest.setdefault("search", search)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(path)
    return manifest


# ------------------------------------------------------------------------------------- the sweeper

class TradeoffSearch:
    """The logic of the search sweeper (hydra_plugins.aim_optuna_sweeper.AimOptunaSweeper)."""

    def __init__(self, sampler: Any, n_trials: int = 20, n_jobs: int = 2, storage: Any = None,
                 study_name: str | None = None, params: DictConfig | dict | None = None,
                 offsets: DictConfig | dict | None = None, enqueue: Sequence[Any] | None = None,
                 rerun: Sequence[int] | None = None) -> None:
        self.sampler = sampler
        self.n_trials, self.n_jobs = int(n_trials), int(n_jobs)
        self.storage, self.study_name = storage, study_name
        self.params = dict(params or {})
        self.offsets = {str(k): str(v) for k, v in dict(offsets or {}).items()}
        self.enqueue = [dict(e) for e in (enqueue or [])]
        self.rerun = None if rerun is None else [int(n) for n in rerun]
        self.trial_jobs: dict[int, int] = {}  # Optuna trial number -> job number
        self.trial_overrides: dict[int, list[str]] = {}

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.loader = hydra_context.config_loader

    # -- checks before anything runs

    def search_space(self, arguments: Sequence[str]) -> tuple[dict, list[str]]:
        """(distributions by key, fixed override lines): `params`, then the command line's overrides, a later
        value of a key replacing an earlier one; fixed overrides keep the text they were given in."""
        import_optuna()
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

        lines = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        parser = OverridesParser.create()
        distributions, fixed, verbatim = {}, {}, {}
        for line in lines:  # one at a time, so that an error names its parameter; a later key replaces an earlier
            try:
                dist, value = create_params_from_overrides([line])
                override = parser.parse_overrides([line])[0]
            except Exception as exc:
                raise SearchError(f"aim: invalid search space: {line}: {str(exc).strip().splitlines()[0]}") from None
            for key in dist:  # a key keeps its place when a later line replaces it with the same kind
                fixed.pop(key, None)
            for key in value:
                distributions.pop(key, None)
            distributions.update(dist)
            fixed.update(value)
            if value:
                verbatim[override.get_key_element()] = line
        for key in fixed:
            distributions.pop(key, None)
        if not distributions:
            raise SearchError("aim: nothing to search: hydra.sweeper.params has no choice(...) or interval(...)")
        for key, base in self.offsets.items():
            for name in (key, base):
                if name not in distributions:
                    raise SearchError(f"aim: hydra.sweeper.offsets: {name!r} is not a searched parameter; "
                                      f"searched: {', '.join(distributions)}")
        return distributions, [verbatim[k] for k in fixed]

    def seeds(self, distributions: dict) -> list[dict]:
        """`enqueue`'s settings (in config terms: l2 itself) as the study's parameters (an offsets key as its gap);
        Optuna runs them first and samples the parameters they omit. A setting outside the search space (say,
        the exp file's seed after `pruner=none` or narrower bounds on the command line) is skipped, with a
        warning that says why."""
        out = []
        for i, entry in enumerate(self.enqueue):
            try:
                out.append(self._seed(entry, distributions))
            except SearchError as exc:
                log.warning(f"aim search: hydra.sweeper.enqueue[{i}] {entry} not run: {exc}")
        return out

    def _seed(self, entry: dict, distributions: dict) -> dict:
        params = {}
        for key, value in entry.items():
            if key not in distributions:
                raise SearchError(f"{key!r} is not a searched parameter (searched: {', '.join(distributions)})")
            if key in self.offsets:
                base = self.offsets[key]
                if base not in entry:
                    raise SearchError(f"{key} needs {base} beside it ({key} - {base} is searched)")
                value = value - entry[base]
            d = distributions[key]
            try:
                inside = d._contains(d.to_internal_repr(value))
            except (ValueError, TypeError):
                inside = False
            if not inside:
                shown = f"{key} - {self.offsets[key]} = {value}" if key in self.offsets else f"{key} = {value!r}"
                raise SearchError(f"{shown} is outside the search space ({distribution_text(d)})")
            params[key] = value
        return params

    def check(self, distributions: dict, fixed: list[str]) -> dict[str, GroupFields]:
        """Validate before any job: the search node, the counts, and every corner of the space composed and
        validated as its job would be. Returns what assignment_overrides needs about the groups."""
        from aim.checks import ConfigError
        from aim.sweep import InvalidSweep, plan_jobs

        try:
            search = search_config(self.config)
        except ConfigError as exc:
            raise SearchError(f"aim: invalid search: {exc}") from None
        if search is None:
            raise SearchError("aim: the search sweeper needs a `search` node (search.objective: "
                              f"{' | '.join(OBJECTIVES)}); use +exp=search_tradeoff")
        if search.objective == "agreement" and OmegaConf.select(self.config, "fidelity.enabled", default=None) is False:
            raise SearchError("aim: search.objective=agreement needs fidelity.enabled=true")
        budget = [k for k in BUDGET_LIMITS
                  if OmegaConf.select(self.config, f"budget.{k}", default=None) is not None]
        if budget:  # budget mode would replace the sampled knobs in every trial
            raise SearchError(f"aim: budget.{budget[0]}: a search sets the merger's and pruner's knobs itself; "
                              "leave budget.tflops, budget.fraction and budget.prefill_ms null")
        if self.storage is not None:
            import sqlalchemy

            if int(sqlalchemy.__version__.split(".")[0]) >= 2:  # optuna 2.10's RDB storage fails an assertion
                raise SearchError(f"aim: hydra.sweeper.storage: optuna 2.10's database storage needs SQLAlchemy < 2, "
                                  f"found {sqlalchemy.__version__}; leave storage null (tradeoff.json does not need it)")
        if self.n_trials < 1 or self.n_jobs < 1:
            raise SearchError(f"aim: hydra.sweeper.n_trials and n_jobs must be >= 1, got {self.n_trials}, {self.n_jobs}")
        optuna = import_optuna()
        fields = {}
        for group in GROUP_FIELD_GROUPS:
            if not any(k.startswith(f"{group}.") for k in distributions):
                continue
            d = distributions.get(group)
            searched = isinstance(d, optuna.distributions.CategoricalDistribution)
            fixed_choice = None if searched else OmegaConf.select(self.config, f"hydra.runtime.choices.{group}")
            options = [str(c) for c in d.choices] if searched else [fixed_choice]
            try:
                fields[group] = GroupFields(option_fields(self.loader, self.config, group, options, fixed),
                                            fixed_choice, registered_fields(group))
            except Exception as exc:
                raise SearchError(f"aim: invalid search space: {group}: {str(exc).strip().splitlines()[0]}") from None
        settings = [assignment_overrides(c, fixed, self.offsets, fields) for c in corners(distributions)]
        try:
            plan_jobs(self.loader, self.config, list(enumerate(settings)))
        except InvalidSweep as exc:
            lines = [f"aim: invalid search space, nothing was launched: {len(exc.problems)} of {len(settings)} "
                     "corner settings are invalid"]
            lines += [f"  [{' '.join(o for o in overrides if o not in fixed)}]: {msg}" for _, overrides, msg in exc.problems]
            raise SearchError("\n".join(lines)) from None
        return fields

    # -- the search

    def sweep(self, arguments: list[str]) -> Any:
        from aim.sweep import SweepError

        try:
            if self.rerun is not None:
                return self._rerun()
            distributions, fixed = self.search_space(arguments)
            fields = self.check(distributions, fixed)
        except (SearchError, SweepError, FileNotFoundError) as exc:
            print(exc, file=sys.stderr)
            sys.exit(2)
        return self._search(distributions, fixed, fields)

    def _search(self, distributions: dict, fixed: list[str], fields: dict[str, GroupFields]) -> Any:
        optuna = import_optuna()
        from aim.sweep import InvalidSweep, SweepError, plan_jobs

        search = search_config(self.config)
        info = {"sweeper": "aim_optuna", "objective": search.objective, "cost": COST,
                "directions": ["maximize", "minimize"], "n_trials": self.n_trials, "n_jobs": self.n_jobs,
                "sampler": type(self.sampler).__name__, "offsets": self.offsets, "enqueue": self.enqueue,
                "params": {k: distribution_text(d) for k, d in distributions.items()},
                "model": OmegaConf.select(self.config, "hydra.runtime.choices.model", default=None)}
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=self.sampler,
                                    directions=info["directions"], load_if_exists=True)
        for params in self.seeds(distributions):
            with warnings.catch_warnings():  # enqueue_trial is "experimental" in optuna 2.10
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.enqueue_trial(params)
        log.info(f"aim search: {search.objective} (max) vs {COST} (min), {self.n_trials} jobs in batches of "
                 f"{self.n_jobs}, {type(self.sampler).__name__}; space: {info['params']}")
        job_idx, failures, returns = 0, [], []
        evaluated: dict[tuple, list[float] | None] = {}  # a setting's overrides -> its values (None: failed)
        evaluated_jobs: dict[tuple, int] = {}  # a setting's overrides -> the job that ran it

        def tell(trial, values):
            if values is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, values)

        while job_idx < self.n_trials:
            size = min(self.n_jobs, self.n_trials - job_idx)
            trials, batch, keys, twins = [], [], [], []
            for _ in range(MAX_ASKS_PER_JOB * size):
                if len(trials) == size:
                    break
                trial = study.ask()
                values = {name: trial._suggest(name, d) for name, d in distributions.items()}
                overrides = assignment_overrides(values, fixed, self.offsets, fields)
                key = tuple(o for o in overrides if o not in fixed)  # the setting the job would run
                self.trial_overrides[trial.number] = list(key)
                # NSGA-II often proposes a setting again (crossover copies values, and the fields a trial's pruner
                # lacks do not matter): it gets the values already measured, and the batch a new setting instead
                if key in evaluated:
                    self.trial_jobs[trial.number] = evaluated_jobs[key]
                    tell(trial, evaluated[key])
                elif key in keys:
                    self.trial_jobs[trial.number] = job_idx + keys.index(key)
                    twins.append((trial, key))  # told after the batch, with its twin's values
                else:
                    self.trial_jobs[trial.number] = job_idx + len(trials)
                    trials.append(trial)
                    batch.append(overrides)
                    keys.append(key)
            if not trials:
                log.info(f"aim search: {MAX_ASKS_PER_JOB * size} proposals in a row were settings already run; "
                         f"stopping after {job_idx} jobs")
                break
            size = len(trials)
            numbered = list(zip(range(job_idx, job_idx + size), batch))
            try:
                jobs = plan_jobs(self.loader, self.config, numbered)
                for job, trial in zip(jobs, trials):
                    job["trial"] = trial.number
                extend_manifest(self.sweep_dir, self.config, jobs, info)
            except (InvalidSweep, SweepError) as exc:
                for trial in trials + [t for t, _ in twins]:
                    tell(trial, None)
                print(f"{exc}\naim: search stopped before job {job_idx}", file=sys.stderr)
                self._write_tradeoff()
                sys.exit(2)
            results = self.launcher.launch([list(o) for o in batch], initial_job_idx=job_idx)
            returns.append(results)
            batch_failures = []
            for num, trial, key, ret in zip(range(job_idx, job_idx + size), trials, keys, results):
                try:
                    values = [float(v) for v in ret.return_value]
                    if len(values) != 2 or not all(math.isfinite(v) for v in values):
                        raise ValueError(f"expected [{search.objective}, {COST}], got {ret.return_value!r}")
                except Exception as exc:  # the job failed (its error is in its job.json), or returned no objectives
                    values = None
                    batch_failures.append((num, exc))
                tell(trial, values)
                evaluated[key], evaluated_jobs[key] = values, num
            for trial, key in twins:
                tell(trial, evaluated[key])
            failures += batch_failures
            job_idx += size
            self._write_tradeoff()
            if batch_failures and len(batch_failures) == size:
                log.error(f"aim search: every job of the batch {job_idx - size}..{job_idx - 1} failed; stopping")
                break
        self._finish(study, failures)
        return returns

    def _rerun(self) -> Any:
        """`hydra.sweeper.rerun=[...]` (launch/sweep.py resubmit): relaunch those jobs of sweep.json in their
        own dirs, with no study (the trade-off is read back from the results files), then tradeoff.json."""
        from aim.sweep import plan_jobs, read_manifest, rerun_overrides

        manifest = read_manifest(self.sweep_dir)
        numbered = list(zip(self.rerun, rerun_overrides(manifest, self.rerun)))
        plan_jobs(self.loader, self.config, numbered)
        results = self.launcher.launch([list(o) for _, o in numbered], initial_job_idx=0)
        self._write_tradeoff()
        for r in results:
            _ = r.return_value  # raise the first failure, as the basic sweeper does
        return [results]

    def _write_tradeoff(self) -> None:
        """tradeoff.json from the sweep dir; where it cannot be written (no done job, sweep.json unreadable), why,
        logged: the search goes on, and stops at the next batch where sweep.json is unreadable."""
        try:
            path = write_tradeoff(self.sweep_dir)
            log.info(f"aim search: {path}")
        except (SearchError, SweepError, FileNotFoundError) as exc:
            log.error(f"aim search: no {TRADEOFF}: {exc}")

    def _finish(self, study, failures: list) -> None:
        path = self.sweep_dir / TRADEOFF
        if path.exists():
            data = json.loads(path.read_text())
            log.info(f"aim search: {len(study.trials)} proposals, {len(data['points'])} settings evaluated, Pareto set "
                     f"({data['objective']} vs {COST}):\n"
                     + format_rows(pareto_rows(data)))
        # as hydra-optuna-sweeper writes it, plus each solution's job and the overrides it ran with (the params
        # are as sampled: an offsets key holds the gap added to its base, and every trial has every param)
        solutions = {}  # one per job: a setting proposed twice is one solution
        for t in study.best_trials:
            solutions.setdefault(self.trial_jobs.get(t.number), {
                "job": self.trial_jobs.get(t.number), "params": dict(t.params), "values": list(t.values),
                "overrides": self.trial_overrides.get(t.number)})
        OmegaConf.save(OmegaConf.create({"name": "optuna", "directions": ["maximize", "minimize"],
                                         "solutions": list(solutions.values())}),
                       self.sweep_dir / "optimization_results.yaml")
        if failures:
            nums = [n for n, _ in failures]
            print(f"aim search: {len(failures)} trial(s) failed: jobs {nums}; `python launch/sweep.py resubmit "
                  f"{self.sweep_dir}` reruns them. First error: {failures[0][1]}", file=sys.stderr)
            raise failures[0][1]


# ------------------------------------------------------------------------------------- command line

def print_left_out(data: dict) -> None:
    """The trade-off holds the done jobs; say on stderr which it leaves out (failed, missing, running), and why
    (its `left_out`), and which done ones cannot be on its Pareto set (no finite objective or TFLOPs)."""
    left = data.get("left_out") or []
    if left:
        print(f"aim.search: {len(left)} of {len(left) + len(data['points'])} jobs are not done and not in the "
              "trade-off: " + "; ".join(f"job {r['num']} ({r['run']}) {r['state']}" + (f": {r['why'][:200]}" if r["why"] else "")
                                        for r in left), file=sys.stderr)
    unscored = unscored_points(data)
    if unscored:
        print(f"aim.search: {len(unscored)} of {len(data['points'])} points have no finite {data['objective']} or {COST} "
              f"in their results.json (null or NaN), so they are on no Pareto set and compared with nothing: "
              + ", ".join(p["run"] for p in unscored), file=sys.stderr)


def unscored_points(data: dict) -> list[dict]:
    """The points of a trade-off without a finite objective or TFLOPs (aim.tradeoff.metric: None)."""
    return [p for p in data["points"] if p.get(data["objective"]) is None or p.get(COST) is None]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write <sweep dir>/tradeoff.json (every done job; the Pareto set on "
                                 "objective max vs TFLOPs min) and print the Pareto set.")
    ap.add_argument("sweep_dir", type=Path, help="a sweep dir with sweep.json (e.g. from +exp=search_tradeoff)")
    ap.add_argument("--objective", choices=OBJECTIVES,
                    help="default: the jobs' search.objective, else accuracy")
    ap.add_argument("--json", action="store_true", help="print tradeoff.json instead of the table")
    ap.add_argument("--against", type=Path, metavar="SWEEP_DIR",
                    help="another sweep on the same model, data and frames (e.g. +exp=ablation_layers with the same "
                         "dataset.limit): for each of its jobs, the search's best setting at no more TFLOPs")
    args = ap.parse_args(argv)
    try:
        path = write_tradeoff(args.sweep_dir, args.objective)
        data = json.loads(path.read_text())
        other = tradeoff(args.against, data["objective"]) if args.against else None
    except (SearchError, SweepError, FileNotFoundError) as exc:
        print(f"aim: {exc}", file=sys.stderr)
        return 2
    print_left_out(data)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        n_pareto = sum(p["pareto"] for p in data["points"])
        print(f"{path}: {len(data['points'])} points, {n_pareto} on the Pareto front ({data['objective']} max, "
              f"{COST} min), {data['model']} on {data['dataset']}, {data['num_frames']} frames")
        print(format_rows(pareto_rows(data)))
    if other is not None:
        if (other["pretrained"], other["dataset"], other["num_frames"]) != (data["pretrained"], data["dataset"],
                                                                          data["num_frames"]):
            print(f"aim: {args.against} is another model, dataset or frame count", file=sys.stderr)
            return 2
        rows, matched = compare(data, other)
        print(f"\nagainst {args.against} ({other.get('dataset_limit') or 'all'} questions per job; the search's: "
              f"{data.get('dataset_limit') or 'all'}):\n" + compare_markdown(rows, data["objective"]))
        unscored = unscored_points(other)
        print(f"{matched} of {len(rows)} settings matched or beaten by a search setting at equal or lower TFLOPs"
              + (f" ({len(unscored)} more without a finite {data['objective']} or {COST}, not compared: "
                 + ", ".join(p["run"] for p in unscored) + ")" if unscored else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
