"""One process at a time in a run dir (aim.tracking.rundir): the lock is refused to a second process naming
the holder, waited for when asked, and always waited for by a requeued run of the holder's own SLURM job."""
import os
import subprocess
import sys
import threading

import pytest

from aim.tracking.rundir import RunDirBusy, RunDirLock

# another process holding the run dir's lock until the test writes a line to its stdin
HOLDER = """
import sys
from aim.tracking.rundir import RunDirLock
with RunDirLock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def holder(tmp_path, monkeypatch):
    def start(slurm_job_id=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        if slurm_job_id:
            env["SLURM_JOB_ID"] = slurm_job_id
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        started.append(proc)
        return proc

    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    started = []
    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def release(proc):
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(timeout=60) == 0


def acquire_in_thread(tmp_path, wait=False):
    got = []
    thread = threading.Thread(target=lambda: got.append(RunDirLock(tmp_path, wait=wait).__enter__()), daemon=True)
    thread.start()
    thread.join(timeout=2)
    return thread, got


def test_a_second_process_is_refused_naming_the_holder(tmp_path, holder):
    proc = holder()
    with pytest.raises(RunDirBusy, match=f"in use by pid {proc.pid} on host .*run.wait_for_lock=true"):
        RunDirLock(tmp_path).__enter__()
    release(proc)
    with RunDirLock(tmp_path):  # free again once the holder has ended
        pass


def test_a_second_process_waits_for_the_holder_when_asked(tmp_path, holder, capsys):
    proc = holder()
    thread, got = acquire_in_thread(tmp_path, wait=True)
    assert thread.is_alive() and not got
    assert f"waiting for pid {proc.pid}" in capsys.readouterr().err
    release(proc)
    thread.join(timeout=60)
    assert got
    got[0].__exit__()


def test_a_requeued_run_of_the_same_slurm_job_waits_for_its_previous_run(tmp_path, holder, monkeypatch):
    other = holder(slurm_job_id="41")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    with pytest.raises(RunDirBusy, match="SLURM job 41"):  # another job's run: refused
        RunDirLock(tmp_path).__enter__()
    release(other)
    previous = holder(slurm_job_id="42")
    thread, got = acquire_in_thread(tmp_path)
    assert thread.is_alive() and not got  # its own job's previous run: waited for, not refused
    release(previous)
    thread.join(timeout=60)
    assert got
    got[0].__exit__()
