"""The project as a user installs it (`pip install .`, `pip install git+...`): a wheel built from this tree,
installed into a fresh virtual environment, runs its entry points from a directory outside the repository.
The wheel carries the config tree, the bundled model and the Hydra plugins; what a run generates or writes
goes under the working directory, never into the installed package."""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "README.md", "src", "conf")  # what the build reads (src/aim/conf -> conf)
DISTRIBUTION = "aim_mllm"  # the wheel's file name spelling of the distribution `aim-mllm`


def check(cmd, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel .` builds, from a fresh copy of the tree (a build dir left in the repository by an
    earlier build would leak stale files into it)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(REPO / name, source / name)
    check([sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation", "-w", base / "dist"],
          timeout=300)
    (built,) = (base / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv_python(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed. It sees the test environment's packages (torch,
    hydra, ...) through a .pth file naming their site-packages directories; a plain path line processes no
    .pth file there, so the repository's editable install (a .pth naming src/) is not on its path and
    everything of the project must come from the wheel."""
    venv = tmp_path_factory.mktemp("venv")
    check([sys.executable, "-m", "venv", "--without-pip", venv], timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(check([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (purelib / "test_env.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()))
    check([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel],
          env=clean_env(), timeout=300)
    return python


def clean_env() -> dict[str, str]:
    """The test's environment without PYTHONPATH (a test run may point it at src/) and W&B quiet."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("WANDB_")}
    return {**env, "WANDB_SILENT": "true"}


def run_installed(python: Path, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m ...` as a user runs it from `cwd`; -I: neither PYTHONPATH nor the working directory is on the
    path, so only what the wheel installed can be imported."""
    cwd.mkdir(parents=True, exist_ok=True)
    return check([python, "-I", *args], cwd=cwd, env=clean_env(), timeout=timeout)


def test_distribution_is_not_named_like_the_aim_experiment_tracker_on_pypi(wheel):
    assert wheel.name.startswith(f"{DISTRIBUTION}-")  # `aim` on PyPI is another project


def test_wheel_carries_the_config_tree_the_bundled_model_and_the_hydra_plugins(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"aim/{p.relative_to(REPO).as_posix()}" for p in (REPO / "conf").rglob("*.yaml")}
    assert "aim/conf/config.yaml" in configs and configs <= names
    assert {"aim/assets/toy_llava_ov/model.safetensors", "aim/assets/toy_llava_ov/tokenizer.json",
            "aim/assets/toy_llava_ov/config.json"} <= names
    plugins = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src" / "hydra_plugins").rglob("*.py")}
    assert "hydra_plugins/aim_sweeper/__init__.py" in plugins and plugins <= names
    assert "hydra_plugins/__init__.py" not in names  # a namespace package, shared with Hydra's other plugins


def test_installed_package_is_imported_from_the_virtual_environment(venv_python, tmp_path):
    venv = venv_python.parents[1]
    proc = run_installed(venv_python, tmp_path, "-c", "import json, aim, aim.paths, hydra_plugins.aim_sweeper, "
                         "hydra_plugins.aim_optuna_sweeper as o; print(json.dumps([aim.__file__, "
                         "str(aim.paths.CONF_DIR), hydra_plugins.aim_sweeper.__file__, o.__file__]))")
    files = [Path(f) for f in json.loads(proc.stdout)]
    assert all(f.is_relative_to(venv) for f in files), files
    assert (files[1] / "config.yaml").is_file()


def test_installed_run_evaluates_the_bundled_model_from_outside_the_repository(venv_python, tmp_path):
    work = tmp_path / "work"
    # 8 questions generated, not the default 500 (about 15 s of video encoding): where they go does not depend on it
    run_installed(venv_python, work, "-m", "aim.run", "dataset.num_samples=8", "dataset.limit=2", "logger=none")
    (results_file,) = work.glob("outputs/runs/*/results.json")
    results = json.loads(results_file.read_text())
    assert results["num_samples"] == 2 and results["method"] == {"merger": "aim", "pruner": "aim"}
    assert results["tflops"] > 0 and 0 <= results["accuracy"] <= 1
    # the bundled benchmark is generated at its default root, under the working directory
    assert (work / "data" / "synthetic_video_s2025_n8" / "questions.json").is_file()


def test_installed_flops_estimates_a_preset_from_outside_the_repository(venv_python, tmp_path):
    proc = run_installed(venv_python, tmp_path / "work", "-m", "aim.flops", "model=llava_onevision_7b",
                         "+method=aim", "flops.json=true", timeout=120)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["model"] == "llava-hf/llava-onevision-qwen2-7b-ov-hf"
    assert 0 < result["tflops"] < result["tflops_full"]


def test_installed_bench_times_the_bundled_model_from_outside_the_repository(venv_python, tmp_path):
    proc = run_installed(venv_python, tmp_path / "work", "-m", "aim.bench", "bench.repeats=1", "bench.warmup=0",
                         timeout=120)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["method"] == {"merger": "aim", "pruner": "aim"}
    assert result["prefill_ms"] > 0 and result["visual_tokens_merged"] < result["visual_tokens"]


def test_installed_sweep_uses_the_aim_sweeper_from_the_wheel(venv_python, tmp_path):
    work = tmp_path / "work"
    run_installed(venv_python, work, "-m", "aim.run", "-m", "dataset.num_samples=8", "dataset.limit=1",
                  "logger=none", "eval.progress=false", "merger=none,aim")
    (sweep,) = work.glob("outputs/sweeps/*/sweep.json")  # written by the aim sweeper before it launches
    assert len(list(sweep.parent.glob("*/results.json"))) == 2
