import os
import shutil

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def reference_cache(tmp_path_factory):
    """The unreduced answers that fidelity compares against (aim.eval.fidelity) go to one cache per test
    session, never the user's ~/.cache; runs in subprocesses inherit it. Tests that count what is computed
    set their own `fidelity.cache_dir`."""
    path = tmp_path_factory.mktemp("aim_cache")
    old = os.environ.get("AIM_CACHE_DIR")
    os.environ["AIM_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("AIM_CACHE_DIR", None)
    else:
        os.environ["AIM_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_adapter():
    """The bundled model's architecture with random weights: real HF classes, no checkpoint needed."""
    from tests.tiny_models import toy_adapter

    return toy_adapter()


@pytest.fixture(scope="session")
def small_benchmark(tmp_path_factory):
    from aim.data.synthetic import generate_benchmark

    return generate_benchmark(tmp_path_factory.mktemp("bench") / "synthetic", num_samples=10, seed=7, progress=False)


@pytest.fixture
def bench_with_a_corrupt_video(small_benchmark, tmp_path):
    """The small benchmark with its third video (video_00002.mp4) overwritten by bytes no decoder reads."""
    root = tmp_path / "bench"
    shutil.copytree(small_benchmark, root)
    (root / "videos" / "video_00002.mp4").write_bytes(b"garbage")
    return root


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def benchmark_roots(tmp_path_factory):
    """Tiny copies of the paper's benchmarks in their release layouts, by dataset config name: the video
    benchmarks (tests/benchmark_fixtures.py) and the image ones (tests/image_benchmark_fixtures.py)."""
    from tests import image_benchmark_fixtures
    from tests.benchmark_fixtures import write_all

    base = tmp_path_factory.mktemp("benchmarks")
    return {**write_all(base), **image_benchmark_fixtures.write_all(base / "images")}


@pytest.fixture(scope="session")
def bundled_env(tmp_path_factory):
    """Environment for `python -m aim.run` subprocesses on the bundled benchmark (tests/sweep_helpers.py)."""
    from tests.sweep_helpers import benchmark_env

    return benchmark_env(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def layers_sweep(tmp_path_factory, bundled_env):
    """`python -m aim.run +exp=ablation_layers -m` on one question per job (9 jobs, about a minute); shared by
    the sweep tests and the report test, which copy it before changing anything in it."""
    from tests.sweep_helpers import multirun

    sweep = tmp_path_factory.mktemp("ablation_layers") / "sweep"
    proc = multirun(sweep, "+exp=ablation_layers", "dataset.limit=1", "logger=none", env=bundled_env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep
