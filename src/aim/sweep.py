"""Sweeps: every job validated before any is launched, a manifest of the expected jobs, each job's state.

Design. A Hydra multirun is a sweeper (which turns the command line and `hydra.sweeper.params` into one
override list per job) handing batches to a launcher (local, or SLURM through hydra-submitit-launcher).
The sweeper is the one place that holds the whole job list before anything runs, and it works the same
whatever the launcher, so the checks live there: `hydra/sweeper=aim` (conf/hydra/sweeper/aim.yaml, the
default in conf/config.yaml) is Hydra's basic sweeper plus three steps before the first launch:

1. compose every job's config exactly as its launcher will (`load_sweep_config`) and check it with
   `aim.config.validate`, and refuse a knob the overrides give that no job's aim.run would read (`unread_knobs`:
   `eval.max_new_tokens` with every job in letter mode; `-m eval.mode=letter,generate eval.max_new_tokens=64` is
   fine, its generate jobs read it); if any job is invalid, print each bad job's overrides and field and exit with
   status 2 — nothing is launched, no job directory is made;
2. write `sweep.json` in the sweep dir: the expected jobs (number, overrides, output subdirectory,
   merger and pruner) and the overrides that made the sweep, so a status view or the analysis can tell
   done from missing, and a resubmission can relaunch exactly those jobs;
3. with `hydra.sweeper.rerun=[i, j, ...]`, launch only those jobs of an existing `sweep.json`, each in
   its original directory (where `aim.run` resumes from `samples.jsonl`). `launch/sweep.py resubmit`
   builds that command for the failed and missing jobs.

(A Hydra callback's `on_multirun_start` sees the config but not the job list; a launcher subclass would
have to wrap each launcher. The sweeper class itself must sit in the `hydra_plugins` namespace, where Hydra
looks for plugins: src/hydra_plugins/aim_sweeper/ holds that thin subclass; the logic is here.)

Each job also records its own state in `job.json` in its output dir (running with host, PID and SLURM job id,
written by aim.run once its checks pass: `mark_running`; done or failed at the end: the `JobState` callback
in conf/config.yaml), which `status()`
combines with `results.json` and, for SLURM jobs, the scheduler's view.
"""
from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import filter_overrides
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from aim.tracking.records import read_samples
from aim.tracking.rundir import read_json, slurm_job_id

MANIFEST = "sweep.json"
JOB_STATE = "job.json"
RESULTS = "results.json"
STATES = ("done", "running", "queued", "failed", "missing")


class SweepError(ValueError):
    """A sweep that cannot be launched as asked; the message says why."""


def sweep_command(name: str, main, argv=None) -> int:
    """Run a sweep command's `main(argv)` (launch/sweep.py, analysis/collect.py, analysis/report.py): a sweep dir
    that is not one, or whose sweep.json cannot be read, is reported as `<name>: <reason>` on stderr with exit
    status 2, not a traceback."""
    try:
        return main(argv)
    except (FileNotFoundError, SweepError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2


class InvalidSweep(SweepError):
    """One or more jobs of a sweep have invalid configs; the message lists each one."""

    def __init__(self, problems: list[tuple[int, list[str], str]], num_jobs: int):
        self.problems = sorted(problems, key=lambda p: p[0])
        bad = len({num for num, _, _ in problems})  # a job may have two problems (a knob no job reads, a shared dir)
        lines = [f"aim: invalid sweep, nothing was launched: invalid config in {bad} of {num_jobs} jobs"]
        for num, overrides, message in self.problems:
            lines.append(f"  job {num} [{' '.join(filter_overrides(overrides))}]: {message}")
        super().__init__("\n".join(lines))


def sweep_overrides(config_loader, params: dict | None, arguments: Sequence[str]) -> list[list[str]]:
    """Each job's override list, as Hydra's basic sweeper makes them: `hydra.sweeper.params` then the
    command line's overrides, the sweeps among them crossed (a later value of a key replaces an earlier)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    parsed = OverridesParser.create(config_loader=config_loader).parse_overrides(lines)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def plan_jobs(config_loader, master_config: DictConfig, job_overrides: Sequence[tuple[int, Sequence[str]]]) -> list[dict]:
    """Compose and validate each (job number, overrides) the way its launcher will; return the
    manifest's job entries, or raise InvalidSweep naming every bad job."""
    from aim.config import ConfigError, check_logger, given_knobs, unread_knobs, validate

    jobs, problems = [], []
    unread_by: dict[str, list] = {}  # knob -> the (num, overrides, message) of each job that does not read it
    read_by: set[str] = set()  # the knobs some job given them reads
    saved = HydraConfig.instance().cfg
    try:
        for num, overrides in job_overrides:
            try:
                cfg = config_loader.load_sweep_config(master_config, list(overrides))
                with open_dict(cfg.hydra.job):
                    cfg.hydra.job.num = num
                HydraConfig.instance().set_config(cfg)  # as run_job does before resolving the subdir
                valid = validate(cfg)
                unread = unread_knobs(valid, "aim.run", overrides)
                for knob, message in unread.items():
                    unread_by.setdefault(knob, []).append((num, list(overrides), message))
                read_by.update(given_knobs(overrides).keys() - unread.keys())
                check_logger(valid)
                subdir = str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
            except ConfigError as exc:
                problems.append((num, list(overrides), str(exc)))
                continue
            except Exception as exc:  # composition: unknown group option, bad override syntax, ...
                problems.append((num, list(overrides), f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"))
                continue
            if valid.sharding.shard is not None:
                problems.append((num, list(overrides), "dataset.shard: set by the sweeper for each shard of a job "
                                 "with dataset.shards > 1; give dataset.shards only"))
                continue
            choices = cfg.hydra.runtime.choices
            jobs.append({
                "num": num, "overrides": list(overrides), "subdir": subdir,
                "merger": valid.merger.name, "pruner": valid.pruner.name,
                "method": choices.get("method") or f"{choices.get('merger')}+{choices.get('pruner')}",
                "shards": valid.sharding.shards,
            })
    finally:
        HydraConfig.instance().cfg = saved
    for knob, jobs_leaving_it in unread_by.items():  # refused only where no job of the sweep reads it
        if knob not in read_by:
            problems.extend(jobs_leaving_it)
    first_with: dict[str, int] = {}
    for job in jobs:  # two jobs in one dir would mix their records (aim.run refuses the second)
        if job["subdir"] in first_with:
            problems.append((job["num"], job["overrides"], f"hydra.sweep.subdir: {job['subdir']!r} is job "
                             f"{first_with[job['subdir']]}'s output dir too; make the subdir tell the jobs apart"))
        first_with.setdefault(job["subdir"], job["num"])
    if problems:
        raise InvalidSweep(problems, len(job_overrides))
    return jobs


def write_manifest(sweep_dir: Path, master_config: DictConfig, jobs: list[dict]) -> dict:
    """Write `sweep.json`; a sweep dir that already holds a manifest must list the same jobs."""
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / MANIFEST
    manifest = {
        "sweep_dir": str(sweep_dir.resolve()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "argv": sys.argv,
        "task_overrides": list(master_config.hydra.overrides.task),
        "hydra_overrides": list(master_config.hydra.overrides.hydra),
        "launcher": master_config.hydra.runtime.choices.get("hydra/launcher"),
        "num_jobs": len(jobs),
        "jobs": jobs,
    }
    if path.exists():
        old = read_manifest(sweep_dir)  # a damaged one: SweepError, nothing launched
        old_jobs = [(j["overrides"], j["subdir"]) for j in old["jobs"]]
        if old_jobs != [(j["overrides"], j["subdir"]) for j in jobs]:
            raise SweepError(f"aim: {path} lists other jobs, nothing was launched; use another hydra.sweep.dir, "
                             f"or `python launch/sweep.py resubmit {sweep_dir}` to rerun that sweep's jobs")
        return old  # the same sweep launched again: its jobs resume in their directories
    sweep_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(path)
    return manifest


def read_manifest(sweep_dir: str | Path) -> dict:
    path = Path(sweep_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: not a sweep dir made by `python -m aim.run -m` (hydra/sweeper=aim)")
    manifest, damaged = read_json(path)
    if damaged or "jobs" not in manifest:
        raise SweepError(f"{path.parent}: {damaged or 'sweep.json has no jobs list'}; the sweep's job list cannot be "
                         "read: restore it (each job's .hydra/overrides.yaml holds its overrides)")
    manifest["sweep_dir"] = str(Path(sweep_dir).resolve())  # where it is now, should it have moved
    return manifest


def quote_override_value(value: str) -> str:
    """A string as a quoted Hydra override value (subdirs hold '=' and ',')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def rerun_overrides(manifest: dict, nums: Sequence[int]) -> list[list[str]]:
    """Override lists that relaunch jobs `nums` of a manifest, each in its original subdirectory."""
    by_num = {j["num"]: j for j in manifest["jobs"]}
    unknown = [n for n in nums if n not in by_num]
    if unknown:
        raise SweepError(f"aim: jobs {unknown} are not in {manifest['sweep_dir']}/{MANIFEST} (jobs 0..{len(by_num) - 1})")
    return [by_num[n]["overrides"] + [f"hydra.sweep.subdir={quote_override_value(by_num[n]['subdir'])}"] for n in nums]


SHARD_OVERRIDE = "dataset.shard="


def launch_list(sweep_dir: Path, jobs: list[dict], numbered: Sequence[tuple[int, Sequence[str]]],
                rerun: bool = False) -> tuple[list[list[str]], list[dict]]:
    """What the launcher gets: each job's overrides as they are, and a sharded job (`dataset.shards=N`) as N
    tasks, one per shard (`dataset.shard=i`, its subdir pinned so that every shard writes under the job's
    dir), so that a batch of them is one SLURM array. A rerun launches only the shards not complete yet.
    Also returns the rerun's sharded jobs whose shards are all complete: nothing to launch, only to merge."""
    from aim.tracking import shards

    by_num = {j["num"]: j for j in jobs}
    tasks, to_merge = [], []
    for num, overrides in numbered:
        job, overrides = by_num[num], list(overrides)
        n = job.get("shards", 1)
        if n == 1:
            tasks.append(overrides)
            continue
        pinned = [] if any(o.startswith("hydra.sweep.subdir=") for o in overrides) else \
            [f"hydra.sweep.subdir={quote_override_value(job['subdir'])}"]
        done = {r["shard"] for r in shards.progress(Path(sweep_dir) / job["subdir"], n) if r["complete"]} if rerun else set()
        if len(done) == n:
            to_merge.append(job)
        tasks += [overrides + [f"{SHARD_OVERRIDE}{i}"] + pinned for i in range(n) if i not in done]
    return tasks, to_merge


# ---------------------------------------------------------------------------------------------- job state

def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


_STARTED: set[Path] = set()  # output dirs whose job.json this process marked running


def mark_running(out_dir: Path, overrides: Sequence[str]) -> None:
    """job.json says running (host, PID, SLURM id, attempt). aim.run calls it once its checks pass and it holds
    the dir's lock, so an invocation that is refused (invalid config, another run's dir, a dir in use) leaves
    an existing job.json as it was."""
    path = Path(out_dir) / JOB_STATE
    previous = read_json(path)[0] or {}  # a damaged job.json (killed mid-write by hand) restarts the count
    _write_json(path, {
        "state": "running", "host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": slurm_job_id(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "attempt": previous.get("attempt", 0) + 1,
        "overrides": list(overrides),
    })
    _STARTED.add(Path(out_dir))


def mark_ended(out_dir: Path, error: BaseException | None = None) -> None:
    """job.json says done, or failed with the error, if this process marked it running."""
    if Path(out_dir) not in _STARTED:
        return
    _STARTED.discard(Path(out_dir))
    path = Path(out_dir) / JOB_STATE
    state = read_json(path)[0] or {}
    state.update(state="failed" if error is not None else "done", ended=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if error is not None:
        state["error"] = f"{type(error).__name__}: {error}"[:2000]
    _write_json(path, state)


class JobState(Callback):
    """Ends `job.json` in each job's output dir: done or failed (with the error) for a job that marked itself
    running (`mark_running`). A job killed outright stays `running` there; `status()` then asks the scheduler
    or checks the PID."""

    def on_job_end(self, config: DictConfig, job_return=None, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        failed = job_return is not None and job_return.status == JobStatus.FAILED
        mark_ended(Path(config.hydra.runtime.output_dir), job_return._return_value if failed else None)


# ------------------------------------------------------------------------------------------------- status

def scheduler_states(user: str | None = None) -> dict[str, str] | None:
    """Active SLURM jobs of this user as {job id: state} (array tasks one per line), or None without SLURM."""
    cmd = ["squeue", "-h", "-r", "-o", "%i|%T"]
    if user or os.environ.get("USER"):
        cmd += ["-u", user or os.environ["USER"]]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    states = {}
    for line in out.stdout.splitlines():
        if "|" in line:
            job_id, state = line.strip().split("|", 1)
            states[job_id] = state
    return states


class _Named:
    """Whatever a pickle names (a class, a function) stands in as this inert record: built, filled and
    read, never looked up or called, so reading a pickle runs none of its code."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):  # a call in the pickle (REDUCE) only records its arguments
        self._call = (args, kwargs)

    def __call__(self, *args, **kwargs):  # what a call returned (cloudpickle calls what it rebuilt)
        return _Named(*args, **kwargs)

    def __setstate__(self, state):
        dict_state, slot_state = state if isinstance(state, tuple) and len(state) == 2 else (state, None)
        for part in (dict_state, slot_state):
            if isinstance(part, dict):
                self.__dict__.update({k: v for k, v in part.items() if isinstance(k, str)})

    def __setitem__(self, key, value): ...

    def append(self, value): ...

    def extend(self, values): ...


class _InertUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be overridden
    """Rebuilds a pickle's plain data (lists, dicts, strings, numbers) with every class and function it names
    replaced by an inert `_Named` (the "restricting globals" of the pickle docs: every global and extension
    code goes through find_class, so nothing the file names is imported or run)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module, name):
        return type(name, (_Named,), {"_global": f"{module}.{name}"})

    def _new_object(self, args_on_stack: int):
        """NEWOBJ / NEWOBJ_EX: an inert object, also where the "class" was rebuilt by a call in the pickle
        (cloudpickle's classes defined at run time)."""
        del self.stack[-args_on_stack:]
        cls = self.stack.pop()
        self.append(cls.__new__(cls) if isinstance(cls, type) and issubclass(cls, _Named) else _Named())

    dispatch[pickle.NEWOBJ[0]] = lambda self: self._new_object(1)
    dispatch[pickle.NEWOBJ_EX[0]] = lambda self: self._new_object(2)


def read_submission(path: Path) -> list[str]:
    """The Hydra overrides of a submitit submission (`<job id>_submitted.pkl`: a pickled
    `DelayedSubmission` of the launcher's call, whose first argument is the job's overrides), read
    without running any code from the file."""
    with open(path, "rb") as f:
        delayed = _InertUnpickler(f).load()
    overrides = delayed.__dict__["args"][0]
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ValueError(f"{path}: no override list in its first argument")
    return overrides


def submitted_jobs(sweep_dir: Path, manifest: dict) -> dict:
    """Job number -> SLURM job id of every submitit submission under the sweep dir (the pickled call
    holds the job's overrides; read inertly, see `read_submission`), the latest submission winning; a shard's
    task of a sharded job under (job number, shard)."""
    by_key = {(tuple(j["overrides"]), j["subdir"]): j["num"] for j in manifest["jobs"]}
    by_overrides = {tuple(j["overrides"]): j["num"] for j in manifest["jobs"]}
    found: dict[int, tuple[float, str]] = {}
    for pkl in Path(sweep_dir).glob(".submitit/**/*_submitted.pkl"):
        try:
            overrides = read_submission(pkl)
        except Exception:  # noqa: BLE001  (a torn or foreign file names no job)
            continue
        subdir = None
        for o in overrides:
            if o.startswith("hydra.sweep.subdir="):
                subdir = o.split("=", 1)[1].strip("'").replace("\\'", "'").replace("\\\\", "\\")
        shard = next((int(o[len(SHARD_OVERRIDE):]) for o in overrides if o.startswith(SHARD_OVERRIDE)), None)
        plain = tuple(o for o in overrides if not o.startswith(("hydra.sweep.subdir=", SHARD_OVERRIDE)))
        num = by_key.get((plain, subdir)) if subdir is not None else by_overrides.get(plain)
        if num is None:
            continue
        num = num if shard is None else (num, shard)
        job_id = pkl.name[: -len("_submitted.pkl")]
        mtime = pkl.stat().st_mtime
        if num not in found or found[num][0] < mtime:
            found[num] = (mtime, job_id)
    return {num: job_id for num, (_, job_id) in found.items()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status(sweep_dir: str | Path, query_scheduler: bool = True) -> list[dict]:
    """One row per expected job: num, subdir, state (done / running / queued / failed / missing), detail.

    done: results.json written. running: job.json says running and its process is alive (the scheduler
    lists its SLURM job, or its PID lives on this host). queued: submitted to SLURM, not started yet (or
    requeued). failed: started, not done, and no longer running. missing: never started, not queued."""
    sweep_dir = Path(sweep_dir)
    manifest = read_manifest(sweep_dir)
    active = scheduler_states() if query_scheduler else None
    submitted = submitted_jobs(sweep_dir, manifest) if active is not None else {}
    rows = []
    for job in manifest["jobs"]:
        state, detail, done_samples = run_state(sweep_dir / job["subdir"], job.get("shards", 1), active, submitted,
                                                job["num"])
        rows.append({"num": job["num"], "subdir": job["subdir"], "state": state, "samples": done_samples,
                     "detail": detail, "overrides": job["overrides"]})
    return rows


def run_state(out: Path, shards: int = 1, active: dict | None = None, submitted: dict | None = None,
              num: int | None = None) -> tuple[str, str, int]:
    """(state, detail, samples recorded) of one run dir, a sweep's job or a run of its own (`shards` > 1: a
    sharded run): see `status`. `active`: the scheduler's jobs (None: not asked); `submitted`: the sweep's SLURM
    ids by job number `num` (and by (num, shard))."""
    submitted = submitted or {}
    rerun = ("resubmit the job" if num is not None else
             f"rerun `python -m aim.run` there (its overrides, in {out}/.hydra/overrides.yaml, and hydra.run.dir={out})")
    if shards > 1:
        return _sharded_state(out, shards, num, active, submitted, rerun)
    state, detail = _dir_state(out, active, submitted.get(num), rerun)
    return state, detail, len(read_samples(out / "samples.jsonl").records)


def _dir_state(out: Path, active: dict | None, submitted_id: str | None, rerun: str) -> tuple[str, str]:
    """(state, detail) of one run dir (a job's, or a shard's): see `status`. A results.json whose job.json says
    failed is not a result: the run wrote it, then failed (every sample skipped; a search job without its
    objective), or a later invocation failed. `rerun`: what reruns it (a sweep's job is resubmitted, a run of its
    own is run again in its dir), said where its results.json cannot be read."""
    info, info_damaged = read_json(out / JOB_STATE)
    slurm_id = (info or {}).get("slurm_job_id") or submitted_id
    scheduler_state = active.get(slurm_id) if active is not None and slurm_id else None
    results, results_damaged = read_json(out / RESULTS)
    if results_damaged and (info is None or info.get("state") != "running"):  # its rerun resumes and rewrites it
        return "failed", f"{results_damaged}; {rerun} to rewrite it from samples.jsonl"
    if results is not None and (info is None or info.get("state") not in ("running", "failed")):
        return "done", ""
    if scheduler_state in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING"):
        return "queued", f"slurm {slurm_id} {scheduler_state}"
    if scheduler_state is not None:
        return "running", f"slurm {slurm_id} {scheduler_state}"
    if info_damaged:
        return "failed", info_damaged
    if info is None:
        return "missing", ""
    if info["state"] == "failed":
        return "failed", info.get("error", "")
    if info["state"] == "done":  # finished without results.json: something else went wrong
        return "failed", "job ended without results.json"
    if info.get("slurm_job_id") and active is not None:
        return "failed", f"slurm {info['slurm_job_id']} no longer active"
    if info.get("slurm_job_id"):
        return "running", f"slurm {info['slurm_job_id']} (scheduler not reachable)"
    if info.get("host") == socket.gethostname():
        alive = _pid_alive(int(info["pid"]))
        return ("running", f"pid {info['pid']}") if alive else ("failed", f"pid {info['pid']} is gone")
    return "running", f"on {info.get('host')} (cannot check from here)"


def _sharded_state(out: Path, n: int, num: int | None, active: dict | None, submitted: dict,
                   rerun: str) -> tuple[str, str, int]:
    """(state, detail, samples recorded) of a sharded job of `n` shards: done once merged with a sample answered;
    otherwise from its shards' states (running before queued before failed), the detail counting them: "2/3
    shards done". Merged with every sample skipped is failed, as the unsharded run is (no job.json need say so:
    where the last shard merged, its NothingEvaluated is after its own job.json said done), and so is a merged
    results.json that cannot be read (a merge rewrites it)."""
    from aim.tracking import shards

    states = [_dir_state(shards.shard_dir(out, i), active, submitted.get((num, i)), rerun) for i in range(n)]
    recorded = sum(r["recorded"] for r in shards.progress(out, n))
    done = sum(state == "done" for state, _ in states)
    counted = f"{done}/{n} shards done"
    if done == n:
        results, damaged = read_json(out / RESULTS)
        merge = f"python launch/sweep.py merge {out}"
        if damaged:
            return "failed", f"{counted}; merged {damaged}; merge again: {merge}", recorded
        if results is None:
            return "failed", f"{counted}, not merged: {merge}", recorded
        if results.get("num_samples") == 0:
            return "failed", (f"{counted}, merged: every one of the {results.get('num_skipped')} samples was skipped, "
                              f"nothing was evaluated (every reason in {out / 'samples.jsonl'})"), recorded
        return "done", f"{counted}, merged", recorded
    others = "; ".join(f"shard {i} {state}{': ' + detail if detail else ''}"
                       for i, (state, detail) in enumerate(states) if state != "done")
    found = {state for state, _ in states}
    state = next((s for s in ("running", "queued", "failed") if s in found), "failed" if done else "missing")
    return state, f"{counted}; {others}", recorded


def resubmit_command(manifest: dict, nums: Sequence[int], extra: Sequence[str] = ()) -> list[str]:
    """`python -m aim.run -m ...` relaunching jobs `nums` of the sweep in their directories, with the
    sweep's own task and hydra overrides (the launcher and its settings included) and `extra` last."""
    keep_hydra = [o for o in manifest["hydra_overrides"]
                  if not o.startswith(("hydra.sweep.dir=", "hydra.sweeper.rerun=", "hydra.mode="))]
    return [sys.executable, "-m", "aim.run", "-m", *manifest["task_overrides"], *keep_hydra,
            f"hydra.sweep.dir={quote_override_value(manifest['sweep_dir'])}",
            f"hydra.sweeper.rerun=[{','.join(str(n) for n in nums)}]", *extra]
