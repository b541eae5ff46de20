"""Sweeps on a real one-node SLURM cluster brought up on this machine (launch/local_slurm.py: Debian's
slurmctld, slurmd, slurmdbd with MariaDB, munged; as root, in a private directory): a 2-job sweep through
`hydra/launcher=slurm`, the trade-off search with its trials as SLURM jobs, an invalid sweep that submits
nothing, a job interrupted twice mid-run that requeues and resumes with every sample recorded exactly once, and a
sharded job as one array whose killed shard requeues while the merge waits for it. Skipped, with the reason, where the cluster
cannot be brought up (not root, no apt mirror); under CI=true that fails instead (tests/ci.py)."""
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.ci import require_or_skip
from tests.sweep_helpers import REPO, benchmark_env, multirun

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

# CPU-only jobs sized for a 2-core machine; timeout_min=10 makes submitit count an interruption as a
# time-out (it guarantees min(80%, limit - 10 min) of the limit), so requeueing relies on the
# launcher's max_num_timeout, as a long job hitting its time limit would
SLURM = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]


def load_local_slurm():
    spec = importlib.util.spec_from_file_location("local_slurm", REPO / "launch" / "local_slurm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cluster():
    local_slurm = load_local_slurm()
    if os.geteuid() != 0:
        require_or_skip("the local SLURM cluster runs its daemons as root; these tests do not run as root")
    root = tempfile.mkdtemp(prefix="aim-slurm-")  # not under pytest's tmp: munge and mysql must reach it
    cluster = local_slurm.LocalSlurm(root)
    try:
        cluster.up(log=lambda message: None)
    except (local_slurm.ClusterError, subprocess.TimeoutExpired, OSError) as exc:
        cluster.down(log=lambda message: None)
        shutil.rmtree(root, ignore_errors=True)
        require_or_skip(f"cannot bring up a local SLURM cluster: {exc}")
    yield cluster
    cluster.down(log=lambda message: None)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def env(cluster, tmp_path_factory):
    return {**benchmark_env(tmp_path_factory.mktemp("data")), "SLURM_CONF": cluster.env["SLURM_CONF"],
            "PATH": cluster.client_env()["PATH"]}


def slurm(env, *cmd) -> str:
    return subprocess.run(list(cmd), env=env, capture_output=True, text=True, timeout=30, check=True).stdout


def accounted_state(env, job_id: str, deadline_s: float = 20) -> str:
    """The job's final state in SLURM's accounting (slurmdbd records it a moment after the job ends)."""
    deadline = time.time() + deadline_s
    state = ""
    while time.time() < deadline:
        state = slurm(env, "sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State").strip()
        if state and state not in ("RUNNING", "COMPLETING", "PENDING"):
            return state
        time.sleep(1)
    return state


def ids_in(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


@pytest.mark.timeout(300)
def test_a_two_job_sweep_runs_on_slurm_and_both_results_are_read(tmp_path, env):
    sweep = tmp_path / "sweep"
    proc = multirun(sweep, *SLURM, "hydra.launcher.setup=[echo aim-setup-line-ran]", "merger.ratio=0.5,0.25",
                    "pruner=none", "dataset.limit=2", "logger=none", env=env, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert manifest["launcher"] == "slurm" and manifest["num_jobs"] == 2
    tokens = {}
    for job in manifest["jobs"]:
        out = sweep / job["subdir"]
        results = json.loads((out / "results.json").read_text())
        assert results["num_samples"] == 2
        tokens[results["config"]["merger"]["ratio"]] = results["visual_tokens"]
        job_id = json.loads((out / "job.json").read_text())["slurm_job_id"]
        assert job_id  # it ran as a SLURM job ...
        assert accounted_state(env, job_id) == "COMPLETED"  # ... that the scheduler saw complete
    assert tokens[0.25] < tokens[0.5]  # each job ran with its own overrides
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/**/*_log.out"))
    assert logs.count("aim-setup-line-ran") == 2  # the launcher's `setup` lines ran before each job


@pytest.mark.timeout(420)
def test_the_trade_off_search_runs_its_trials_as_slurm_jobs(tmp_path, env):
    sweep = tmp_path / "search"
    proc = multirun(sweep, *SLURM, "+exp=search_tradeoff", "dataset.limit=2", "logger=none", "hydra.sweeper.n_trials=2",
                    "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.population_size=2",
                    "fidelity.enabled=false", env=env, timeout=400)  # the objective is accuracy: no fidelity needed
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert manifest["launcher"] == "slurm" and manifest["num_jobs"] == 2
    for job in manifest["jobs"]:
        job_id = json.loads((sweep / job["subdir"] / "job.json").read_text())["slurm_job_id"]
        assert job_id and accounted_state(env, job_id) == "COMPLETED"
    points = json.loads((sweep / "tradeoff.json").read_text())["points"]
    assert len(points) == 2 and all(p["tflops"] > 0 and p["num_samples"] == 2 for p in points)
    assert any(p["pareto"] for p in points)


@pytest.mark.timeout(120)
def test_an_invalid_sweep_submits_nothing_to_slurm(tmp_path, env):
    before = slurm(env, "sacct", "-X", "-n", "-P", "-o", "JobID", "-S", "2000-01-01")
    sweep = tmp_path / "sweep"
    proc = multirun(sweep, *SLURM, "merger.ratio=0.5,0", "dataset.limit=1", "logger=none", env=env, timeout=100)
    assert proc.returncode == 2
    assert "merger.ratio: must be in (0, 1], got 0" in proc.stderr
    assert not sweep.exists()
    assert slurm(env, "squeue", "-h") == ""
    assert slurm(env, "sacct", "-X", "-n", "-P", "-o", "JobID", "-S", "2000-01-01") == before


def wait_until(what, condition, timeout_s, proc, poll_s=0.05):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {proc.returncode}) before {what}")
        time.sleep(poll_s)
    pytest.fail(f"timed out waiting for {what}")


def pending_signals(pid: int) -> int:
    """The signals pending for a process (thread-directed and process-wide), as a bit mask."""
    status = open(f"/proc/{pid}/status").read().splitlines()
    return sum(int(line.split()[1], 16) for line in status if line.startswith(("SigPnd:", "ShdPnd:")))


def recorded_in(run_dir: Path) -> int:
    """The records a run dir holds so far: complete lines (a line torn by a kill is dropped by the rerun)."""
    samples = run_dir / "samples.jsonl"
    return samples.read_text().count("\n") if samples.exists() else 0


def job_in(run_dir: Path) -> dict:
    """The run dir's job.json (state, attempt, pid, slurm_job_id); attempt 0 before the job has started."""
    state = run_dir / "job.json"
    return json.loads(state.read_text()) if state.exists() else {"attempt": 0}


@contextlib.contextmanager
def sweep_master(cmd: list[str], env: dict, log_path: Path):
    """The sweep's master process (`aim.run -m` on SLURM), its output in log_path; the body interrupts its jobs.
    After the body: the master must finish within 240 s and exit 0 (killed if the body failed)."""
    with open(log_path, "w") as log:
        master = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            yield master
            master.wait(timeout=240)
        finally:
            if master.poll() is None:
                master.kill()
    assert master.returncode == 0, log_path.read_text()[-3000:]


# Both interruptions hold the job's process still (SIGSTOP; the cluster is this machine) while SLURM is told what
# to do, so the job is interrupted exactly where it stopped and cannot finish in between, however fast or slow
# the machine. (Before, `scontrol requeue` alone was flaky: SLURM follows it with SIGTERM, which submitit ignores,
# and SIGKILL only KillWait = 5 s later; a job that finished its remaining samples inside that window completed
# normally, the master returned on that result, and the test read attempt 2 while SLURM's rerun of the requeued
# job was still pending.)
@pytest.mark.timeout(600)
def test_an_interrupted_job_requeues_and_records_every_sample_once(tmp_path, env):
    from aim.data.synthetic import generate_benchmark

    # samples; the interruptions come after 2 and 3+ (each rerun is stopped at its first new record), so each of
    # the three runs has some to record. Fidelity off, as in the sharded test below: what is checked is which
    # samples were recorded, not what they scored, and each would cost a second, unreduced forward
    n = 8
    generate_benchmark(Path(env["AIM_DATA_DIR"]) / f"synthetic_video_s2025_n{n}", n, 2025, progress=False)
    sweep = tmp_path / "sweep"
    out = sweep / "0"
    samples = out / "samples.jsonl"
    cmd = [sys.executable, "-m", "aim.run", "-m", f"hydra.sweep.dir={sweep}", *SLURM, f"dataset.num_samples={n}",
           f"dataset.limit={n}", "merger.ratio=0.5", "pruner=none", "logger=none", "eval.progress=false",
           "fidelity.enabled=false"]
    with sweep_master(cmd, env, tmp_path / "master.log") as master:
        # 1. preemption / time-out: SLURM's warning signal (USR2) to the running job; submitit checkpoints,
        # requeues the job and exits. The job is stopped until the signal is pending, so it is interrupted
        # right where it stopped.
        wait_until("2 samples", lambda: recorded_in(out) >= 2, 240, master)
        run1 = job_in(out)
        os.kill(run1["pid"], signal.SIGSTOP)
        job_id = run1["slurm_job_id"]
        slurm(env, "scancel", "--signal=USR2", job_id)
        deadline = time.time() + 60
        while not (delivered := pending_signals(run1["pid"]) & (1 << (signal.SIGUSR2 - 1))) and time.time() < deadline:
            time.sleep(0.05)
        os.kill(run1["pid"], signal.SIGCONT)
        assert delivered, "SLURM did not deliver USR2 to the job's process within 60 s"
        wait_until("the requeued job to start", lambda: job_in(out)["attempt"] == 2, 240, master)
        first = recorded_in(out)  # run 1 is gone: SLURM starts the rerun only after its processes have ended
        assert 2 <= first < n
        wait_until("the rerun to record a sample", lambda: recorded_in(out) > first, 240, master)

        # 2. the scheduler requeues it outright (`scontrol requeue`). SLURM would SIGKILL the job KillWait
        # seconds after its SIGTERM (ignored by submitit); the test kills it at once, as a node would, so the
        # interruption lands where the job was stopped.
        run2 = job_in(out)
        os.kill(run2["pid"], signal.SIGSTOP)
        second = recorded_in(out)
        slurm(env, "scontrol", "requeue", job_id)
        os.kill(run2["pid"], signal.SIGKILL)
        assert first < second < n
    final = job_in(out)
    assert final["attempt"] == 3 and final["state"] == "done"  # a third run, after the requeue, finished the job
    assert final["pid"] not in (run1["pid"], run2["pid"])
    ids = ids_in(samples)
    assert len(ids) == n and len(set(ids)) == n  # every sample once: none lost, none evaluated twice
    assert json.loads((out / "results.json").read_text())["num_samples"] == n
    assert accounted_state(env, job_id) == "COMPLETED"


# A sharded job (dataset.shards=2) is one SLURM array of 2 tasks, one per shard. Shard 0 is held still (SIGSTOP)
# after 2 samples while shard 1 finishes: shard 1 does not merge (the merge waits for shard 0) and the status
# counts 1 of 2 shards done. Then shard 0 is requeued and killed where it stopped: its rerun resumes from its
# own records, finishes last and merges; every sample is recorded once, in its shard and in the merged run.
@pytest.mark.timeout(300)
def test_a_sharded_job_is_an_array_whose_killed_shard_requeues_and_the_merge_waits_for_it(tmp_path, env, monkeypatch):
    from aim.data.synthetic import generate_benchmark
    from aim.sweep import status

    n = 8
    generate_benchmark(Path(env["AIM_DATA_DIR"]) / f"synthetic_video_s2025_n{n}", n, 2025, progress=False)
    sweep = tmp_path / "sweep"
    run_dir = sweep / "0"
    shard0, shard1 = run_dir / "shards" / "0", run_dir / "shards" / "1"
    cmd = [sys.executable, "-m", "aim.run", "-m", f"hydra.sweep.dir={sweep}", *SLURM, f"dataset.num_samples={n}",
           f"dataset.limit={n}", "dataset.shards=2", "merger.ratio=0.5", "pruner=none", "logger=none",
           "eval.progress=false", "fidelity.enabled=false"]
    with sweep_master(cmd, env, tmp_path / "master.log") as master:
        wait_until("shard 0 to record 2 samples", lambda: recorded_in(shard0) >= 2, 240, master)
        run1 = job_in(shard0)
        os.kill(run1["pid"], signal.SIGSTOP)
        wait_until("shard 1 to finish", lambda: job_in(shard1).get("state") == "done", 240, master)
        assert not (run_dir / "results.json").exists()  # shard 1 finished first: the merge waits for shard 0
        for key in ("SLURM_CONF", "PATH"):
            monkeypatch.setenv(key, env[key])
        row = status(sweep)[0]
        assert row["state"] == "running" and row["detail"].startswith("1/2 shards done; shard 0 running: slurm")
        first = recorded_in(shard0)
        slurm(env, "scontrol", "requeue", run1["slurm_job_id"])
        os.kill(run1["pid"], signal.SIGKILL)
        assert 2 <= first < n // 2
    array = {job_in(s)["slurm_job_id"].split("_")[0] for s in (shard0, shard1)}
    assert len(array) == 1  # the two shards were tasks of one SLURM array
    final = job_in(shard0)
    assert final["attempt"] == 2 and final["state"] == "done" and final["pid"] != run1["pid"]
    merged = ids_in(run_dir / "samples.jsonl")
    assert len(merged) == n and len(set(merged)) == n  # every sample once: none lost, none evaluated twice
    assert ids_in(shard0 / "samples.jsonl") == merged[0::2] and ids_in(shard1 / "samples.jsonl") == merged[1::2]
    assert json.loads((run_dir / "results.json").read_text())["num_samples"] == n
    assert (run_dir / "results.json").stat().st_mtime >= (shard0 / "results.json").stat().st_mtime  # merged last
    assert accounted_state(env, run1["slurm_job_id"]) == "COMPLETED"
    assert status(sweep)[0]["detail"] == "2/2 shards done, merged"
