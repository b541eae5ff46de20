"""One process at a time in a run dir: `aim.run` holds an exclusive lock on `<run dir>/run.lock` for the whole
evaluation, so two processes never append to one samples.jsonl (a user starting the same command twice, or a
SLURM requeue overlapping the job it replaces).

The lock is `fcntl.flock` on the file: the kernel releases it when the holder's process ends however it ends
(SIGKILL included), so a lock is never stale. The file stays; while held it names its holder (pid, host,
SLURM job id), which is how a refused process names it. A second process fails at once (exit 3) unless
`run.wait_for_lock` is true; it always waits when the holder is an earlier run of its own SLURM job (a
requeued job whose previous run SLURM has not finished killing yet)."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK = "run.lock"


class RunDirBusy(RuntimeError):
    """Another process holds the run dir's lock; the message names it."""


def slurm_job_id() -> str | None:
    """This process's SLURM job id as squeue/sacct show it (`<array>_<task>` for an array task)."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def _holder(fd: int) -> dict:
    """What the lock file says about its holder ({} when it has not written it yet)."""
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process (it has not written its pid yet)"
    slurm = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')}{slurm}, since {holder.get('since')}"


class RunDirLock:
    """`with RunDirLock(out_dir, wait=False):` holds `out_dir/run.lock`; raises RunDirBusy when another process
    holds it and waiting was not asked for."""

    def __init__(self, out_dir: str | Path, wait: bool = False):
        self.path = Path(out_dir) / LOCK
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                mine = slurm_job_id()
                if not self.wait and not (mine and holder.get("slurm_job_id") == mine):
                    raise RunDirBusy(f"{self.path.parent} is in use by {_describe(holder)} ({self.path}); set "
                                     "run.wait_for_lock=true to wait for it, or give another hydra.run.dir") from None
                print(f"aim: waiting for {_describe(holder)} to release {self.path}", file=sys.stderr, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
            me = {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job_id": slurm_job_id(),
                  "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None


def read_json(path: Path) -> tuple[dict | None, str | None]:
    """A run dir's JSON object file (results.json, job.json, run_spec.json) as (data, None); (None, None) when
    it does not exist; (None, why) when it cannot be read (empty, truncated, not an object), so that one
    damaged file is reported for its own job instead of stopping the status or the table of every job."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{Path(path).name} unreadable ({exc})"
    if not isinstance(data, dict):
        return None, f"{Path(path).name} unreadable (a JSON {type(data).__name__}, not an object)"
    return data, None
