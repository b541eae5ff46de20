"""Shared by the sweep tests: the bundled benchmark, generated once, and `python -m aim.run -m` as a user
runs it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NUM_SAMPLES = 8  # the bundled benchmark's generator at a small size (dataset.num_samples)


def benchmark_env(data_dir: Path, num_samples: int = NUM_SAMPLES) -> dict[str, str]:
    """Environment for aim.run subprocesses: the benchmark of `num_samples` questions (dataset.num_samples)
    pre-generated under data_dir (jobs that run at once must not generate it together), W&B quiet and offline
    unless a test says otherwise."""
    from aim.data.synthetic import generate_benchmark

    generate_benchmark(Path(data_dir) / f"synthetic_video_s2025_n{num_samples}", num_samples, 2025, progress=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "AIM_DATA_DIR": str(data_dir), "WANDB_SILENT": "true"}


def multirun_args(sweep_dir: Path, *overrides: str) -> list[str]:
    """The command line of `python -m aim.run -m` in sweep_dir on the bundled benchmark, after the module name."""
    return ["-m", f"hydra.sweep.dir={sweep_dir}", f"dataset.num_samples={NUM_SAMPLES}", "eval.progress=false",
            *overrides]


def multirun(sweep_dir: Path, *overrides: str, env: dict, timeout: float, cwd=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "aim.run", *multirun_args(sweep_dir, *overrides)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          stdin=subprocess.DEVNULL)
