"""`python -m aim.run` end to end, as a user runs it: the bundled model on a few bundled questions,
W&B offline, a kill half way and a resume that records every sample exactly once."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def aim_cmd(out_dir, *overrides):
    return [sys.executable, "-m", "aim.run", f"hydra.run.dir={out_dir}", "dataset.num_samples=40",
            "eval.progress=false", *overrides]


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "AIM_DATA_DIR": str(tmp_path / "data"), "WANDB_SILENT": "true"}


def ids_in(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_bundled_model_answers_above_chance_and_writes_results(tmp_path, env):
    out = tmp_path / "run"
    proc = subprocess.run(aim_cmd(out, "merger=none", "pruner=none", "eval.mode=letter",
                                  "logger=wandb", "logger.mode=offline"),
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["num_samples"] == 40 and results["num_skipped"] == 0
    # Chance is 0.25. The bundled model answers 0.96 of all 500 questions by option letter (1.0 of these
    # 40); 0.85 is the foundation issue's target for the whole benchmark.
    assert results["accuracy"] >= 0.85
    assert results["visual_tokens"] == 4 * 49
    assert results["method"] == {"merger": "none", "pruner": "none"}
    assert results["tflops"] > 0 and results["prefill_ms"] > 0 and "fvcore" in results["tflops_source"]
    assert results["tflops"] == pytest.approx(results["tflops_analytic"], rel=0.01)
    assert results["config"]["dataset"]["num_frames"] == 4
    assert "accuracy" in proc.stdout  # the summary table
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))  # the W&B run, offline


def closed_port():
    with socket.socket() as sock:  # bound, then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_wandb_online_without_network_logs_offline_and_the_run_finishes(tmp_path, env):
    """A valid-looking API key but no server: online init times out, then the run logs offline (the failed
    online attempt must not keep the run id busy) and writes its results."""
    out = tmp_path / "run"
    no_network = {**env, "HOME": str(tmp_path / "home"), "WANDB_API_KEY": "k" * 40,
                  "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}"}
    proc = subprocess.run(aim_cmd(out, "dataset.limit=2", "logger=wandb", "logger.mode=online",
                                  "logger.init_timeout_s=2"),
                          env=no_network, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B online logging unavailable" in proc.stderr and "logging offline" in proc.stderr
    assert json.loads((out / "results.json").read_text())["num_samples"] == 2
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))


def test_a_killed_run_resumes_and_records_each_sample_once(tmp_path, env):
    out = tmp_path / "run"
    cmd = aim_cmd(out, "dataset.limit=40", "logger=none")
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = out / "samples.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None:
        if samples.exists() and len(samples.read_text().splitlines()) >= 5:
            first.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    recorded = len(ids_in(samples))
    assert 5 <= recorded < 40
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = ids_in(samples)
    assert len(ids) == 40 and len(set(ids)) == 40
    assert json.loads((out / "results.json").read_text())["num_samples"] == 40


def test_reusing_a_run_dir_with_another_config_is_refused(tmp_path, env):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run_spec.json").write_text(json.dumps({"some": "other run"}))
    proc = subprocess.run(aim_cmd(out, "logger=none"), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "holds a run with a different config" in proc.stderr


def test_bench_times_reduced_against_unreduced_and_ends_with_json(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "aim.bench", "merger=aim", "pruner=aim_toy", "bench.frames=2",
                           "bench.repeats=1", f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"speedup", "flops_ratio", "prefill_ms", "prefill_ms_full", "overhead_ms", "device"} <= set(result)
    assert result["flops_ratio"] > 1.5  # 98 -> 24 visual tokens beside 100 text tokens, then pruned
    assert result["visual_tokens_per_layer"] == [24, 24, 12, 0]
    assert result["prefill_ms"] > 0 and result["importance_ms"] > 0
