"""What CI requires: a missing prerequisite fails there instead of skipping (tests/ci.py), and the local
SLURM cluster waits for munged to answer, not for its socket file (launch/local_slurm.py)."""
import os
import stat
import time

import pytest

from tests.ci import require_or_skip
from tests.test_slurm import load_local_slurm


@pytest.mark.parametrize("value", ["true", "True", "1"])
def test_a_missing_prerequisite_fails_in_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="no chromium.*CI=true"):
        require_or_skip("no chromium")


@pytest.mark.parametrize("value", [None, "", "false"])
def test_a_missing_prerequisite_skips_outside_ci(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        require_or_skip("no chromium")


def fake_munge(bin_dir, answers_after: int):
    """`munge` that fails its first `answers_after` calls (munged still starting), then issues a
    credential that `unmunge` accepts; both count their calls."""
    bin_dir.mkdir()
    script = {
        "munge": f'n=$(cat "{bin_dir}/calls" 2>/dev/null || echo 0); echo $((n + 1)) > "{bin_dir}/calls"\n'
                 f'[ "$n" -ge {answers_after} ] || {{ echo "munge: Error: Failed to access socket" >&2; exit 1; }}\n'
                 'echo CRED',
        "unmunge": 'read cred; [ "$cred" = CRED ]',
    }
    for name, body in script.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_local_slurm_waits_until_a_munge_credential_round_trips(tmp_path, monkeypatch):
    """The socket file can exist before munged answers: readiness is a credential made and decoded
    through the socket, polled for up to two minutes by default."""
    local_slurm = load_local_slurm()
    fake_munge(tmp_path / "bin", answers_after=3)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    cluster = local_slurm.LocalSlurm(tmp_path / "cluster")
    assert local_slurm.MUNGE_READY_S >= 120
    cluster.wait_for_munge(None, timeout=30)
    assert (tmp_path / "bin" / "calls").read_text().strip() == "4"  # three refusals, then an answer


def test_local_slurm_names_munged_and_its_log_when_it_never_answers(tmp_path, monkeypatch):
    local_slurm = load_local_slurm()
    fake_munge(tmp_path / "bin", answers_after=10**6)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    cluster = local_slurm.LocalSlurm(tmp_path / "cluster")
    start = time.time()
    with pytest.raises(local_slurm.ClusterError, match=r"munged \(a credential round trip\) not ready after 1 s.*munged.log"):
        cluster.wait_for_munge(None, timeout=1)
    assert time.time() - start < 10


def run_ci_script(tmp_path, ci: str | None):
    """.ci/run with stand-ins on PATH: `python` fails the Slurm and Chromium installs and runs nothing
    else (it logs its arguments), `pip` installs nothing."""
    import subprocess

    from tests.sweep_helpers import REPO

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\necho "$*" >> "{bin_dir}/log"\n'
                                    'case "$*" in *" install") exit 1;; esac\nexit 0\n')
    (bin_dir / "pip").write_text("#!/bin/sh\nexit 0\n")
    for name in ("python", "pip"):
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    if ci is not None:
        env["CI"] = ci
    proc = subprocess.run(["bash", str(REPO / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    return proc, (bin_dir / "log").read_text().splitlines()


def test_ci_run_fails_when_slurm_or_chromium_does_not_install_under_ci(tmp_path):
    proc, calls = run_ci_script(tmp_path, "true")
    assert proc.returncode != 0
    assert "Slurm packages did not install" in proc.stderr
    assert not any("pytest" in c for c in calls)  # stopped before the tests


def test_ci_run_goes_on_to_the_tests_without_them_outside_ci(tmp_path):
    proc, calls = run_ci_script(tmp_path, None)
    assert proc.returncode == 0, proc.stderr
    assert "tests/test_slurm.py will skip" in proc.stderr and "browser check" in proc.stderr
    assert calls[-1] == "-m pytest -q"
