"""An entry point (`python -m aim.run ARGS`, and aim.flops / aim.bench the same way) run inside the test
process: the same Hydra-decorated main() reading the same command line, with stdout, stderr and the exit
status collected as `subprocess.run(..., capture_output=True, text=True)` returns them. What it saves is a
fresh interpreter importing torch, transformers and Hydra again (seconds per call on a busy CI machine).

For tests of what a run does: its results, its records, its refusals and their exit status. Tests of the
process itself (a kill, a lock another process holds, W&B's service inherited by a child, the interpreter
really exiting) keep a subprocess, and each entry point keeps at least one subprocess test proving its CLI."""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import subprocess
import sys


def run_in_process(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` in this process; `env` replaces os.environ for the call. What a process would
    take with it when it ends is put back after: the environment, sys.argv, Hydra's HydraConfig of the run and
    the logging Hydra set up (its root handlers write into the run dir)."""
    from hydra.core.hydra_config import HydraConfig

    main = importlib.import_module(module).main
    stdout, stderr = io.StringIO(), io.StringIO()
    saved_env, saved_argv, saved_hydra = dict(os.environ), sys.argv, HydraConfig.instance().cfg
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    returncode = 0
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        sys.argv = [module, *args]  # what hydra.main parses
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main()
            except SystemExit as exc:  # sys.exit(n) in main, or Hydra's own exit on a bad command line
                returncode = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        HydraConfig.instance().cfg = saved_hydra
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return subprocess.CompletedProcess([sys.executable, "-m", module, *args], returncode, stdout.getvalue(),
                                       stderr.getvalue())
