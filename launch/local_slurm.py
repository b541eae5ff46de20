"""A real one-node SLURM cluster on this machine, for tests and for trying sweeps without a cluster.

    python launch/local_slurm.py install      # apt-get the Debian packages if any is missing
    python launch/local_slurm.py up [DIR]     # prints `export SLURM_CONF=DIR/etc/slurm.conf`
    python launch/local_slurm.py down DIR     # stops the daemons this script started (by their PIDs)

Debian's Slurm (22.05 on Debian 12), run as root without systemd: munged, MariaDB + slurmdbd (accounting),
slurmctld and slurmd, every file (configs, state, spool, logs, sockets, PID files) inside DIR. Nothing is
written to /etc and no system service is touched. The packages are installed with apt-get when missing.

Why each piece (facts established on the project's machines):
- accounting (slurmdbd + MariaDB): without it `sacct` fails, submitit sees every job as UNKNOWN and waits
  forever on a job that died without writing its result; with it submitit raises UncompletedJobError.
- `KillWait=5`: submitit ignores SIGTERM, so a cancelled or requeued job holds the node until SIGKILL,
  30 s later by default.
- `slurmctld -c` starts from a clean state and job ids restart at 1: give every sweep a fresh submitit
  folder (a fresh sweep dir does), or stale result files pass for new jobs' results.
- Clients (sbatch, squeue, sacct, scancel, scontrol) find the cluster through `SLURM_CONF`; export it to
  every process that submits or inspects jobs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server"]
BINARIES = ["slurmctld", "slurmd", "slurmdbd", "sbatch", "sacctmgr", "munged", "munge", "unmunge", "mariadbd",
            "mariadb-install-db"]
SBIN = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
DAEMONS = ["slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"]  # stop order
CLUSTER = "aimlocal"
DB_PASSWORD = "aim-local-slurm"


class ClusterError(RuntimeError):
    """The cluster could not be brought up; the message says which step and where its log is."""


def which(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def ensure_packages(log=print) -> None:
    """apt-get install the Debian packages when a binary is missing (needs root and a package mirror)."""
    missing = [b for b in BINARIES if which(b) is None]
    if not missing:
        return
    if os.geteuid() != 0 or which("apt-get") is None:
        raise ClusterError(f"missing {', '.join(missing)} and cannot install them (needs root and apt-get)")
    log(f"installing {' '.join(PACKAGES)} (missing: {', '.join(missing)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    still = [b for b in BINARIES if which(b) is None]
    if still:
        raise ClusterError(f"installed the packages but still missing {', '.join(still)}")


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def wait_for(what: str, check, timeout: float, log_file: Path | None = None, proc=None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = ""
    if log_file is not None and log_file.exists():
        tail = "\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
    died = f" (exited with {proc.returncode})" if proc is not None and proc.poll() is not None else ""
    raise ClusterError(f"{what} not ready after {timeout:.0f} s{died}; log: {log_file}{tail}")


MUNGE_READY_S = 120  # munged can be slow to start on a busy machine (it seeds its PRNG first)


def munge_round_trip(socket_path: Path) -> bool:
    """True when munged answers on `socket_path`: a credential made through it decodes through it."""
    try:
        cred = subprocess.run([which("munge") or "munge", "-n", f"--socket={socket_path}"], capture_output=True,
                              timeout=10)
        if cred.returncode != 0:
            return False
        back = subprocess.run([which("unmunge") or "unmunge", f"--socket={socket_path}"], input=cred.stdout,
                              capture_output=True, timeout=10)
        return back.returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        return False


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class LocalSlurm:
    """Paths and daemons of one cluster under `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.conf = self.root / "etc" / "slurm.conf"
        self.dbd_conf = self.root / "etc" / "slurmdbd.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.logs = self.root / "log"
        self.pids = self.root / "pids"

    @property
    def env(self) -> dict[str, str]:
        """What every client process needs: the config (which names the munge socket)."""
        return {"SLURM_CONF": str(self.conf)}

    def client_env(self) -> dict[str, str]:
        path = os.environ.get("PATH", "")
        for d in SBIN:
            if d not in path.split(":"):
                path += f":{d}"
        return {**os.environ, **self.env, "PATH": path}

    def _start(self, name: str, cmd: list[str], user: str | None = None) -> subprocess.Popen:
        """Start a daemon in the foreground of its own session; its PID goes to pids/<name>."""
        log = open(self.logs / f"{name}.out", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, user=user, group=user, env=self.client_env())
        log.close()
        (self.pids / name).write_text(str(proc.pid))
        return proc

    def _run(self, cmd: list[str], what: str, timeout: float = 60, **kw) -> str:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.client_env(), **kw)
        if proc.returncode != 0:
            raise ClusterError(f"{what} failed ({' '.join(cmd)}):\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        return proc.stdout

    def wait_for_munge(self, munged: subprocess.Popen | None, timeout: float = MUNGE_READY_S) -> None:
        """Until a credential round-trips through the socket (its file exists before munged answers), for
        up to `timeout` s; ClusterError with munged's log if it does not, or if munged exits."""
        log_file = self.root / "munge" / "munged.log"
        wait_for("munged (a credential round trip)", lambda: munge_round_trip(self.munge_socket), timeout, log_file, munged)

    def up(self, log=print) -> None:
        ensure_packages(log)
        if os.geteuid() != 0:
            raise ClusterError("the local cluster runs its daemons as root (SlurmUser=root)")
        start = time.time()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # munge and mysql must reach their own subdirectories
        for d in ("etc", "state", "spool", "log", "pids", "munge", "mysql"):
            (self.root / d).mkdir(exist_ok=True)
        ctld_port, slurmd_port, dbd_port, db_port = free_ports(4)
        cpus = os.cpu_count() or 1
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        memory_mb = max(total_mb - 512, 256)  # slurmd refuses a node that claims more than it has

        # munge: a private daemon with a copy of the installed key (munged insists the key is its user's, 0600)
        munge_dir = self.root / "munge"
        key = munge_dir / "munge.key"
        if not key.exists():
            if Path("/etc/munge/munge.key").exists():
                shutil.copy("/etc/munge/munge.key", key)
            else:
                self._run([which("mungekey") or "mungekey", "--create", f"--keyfile={key}"], "mungekey")
        for p in (munge_dir, key):
            shutil.chown(p, "munge", "munge")
        # 0755 before munged starts: it refuses a socket dir without execute for all (clients, root, connect
        # to the socket), and a chmod after the start loses that race on a busy machine
        os.chmod(munge_dir, 0o755)
        os.chmod(key, 0o600)
        munged = self._start("munged", [
            which("munged"), "-F", f"--socket={self.munge_socket}", f"--key-file={key}",
            f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
            f"--seed-file={munge_dir / 'munged.seed'}",
        ], user="munge")
        self.wait_for_munge(munged)

        # MariaDB for slurmdbd, on a private port and socket
        mysql = self.root / "mysql"
        data = mysql / "data"
        shutil.chown(mysql, "mysql", "mysql")
        if not data.exists():
            self._run([which("mariadb-install-db"), "--no-defaults", f"--datadir={data}", "--user=mysql",
                       "--skip-test-db", "--auth-root-authentication-method=socket"], "mariadb-install-db", timeout=120)
        db_socket = mysql / "mysqld.sock"
        mariadbd = self._start("mariadbd", [
            which("mariadbd"), "--no-defaults", f"--datadir={data}", f"--socket={db_socket}", f"--port={db_port}",
            "--bind-address=127.0.0.1", f"--pid-file={mysql / 'mariadbd.pid'}", f"--log-error={mysql / 'mariadbd.log'}",
            "--skip-log-bin", "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M",
        ], user="mysql")
        wait_for("mariadbd", lambda: port_open(db_port) and db_socket.exists(), 60, mysql / "mariadbd.log", mariadbd)
        client = which("mariadb") or which("mysql")
        self._run([client, "--no-defaults", f"--socket={db_socket}", "-uroot", "-e",
                   f"CREATE DATABASE IF NOT EXISTS slurm_acct_db; "
                   f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'; "
                   f"CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '{DB_PASSWORD}'; "
                   "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"],
                  "creating the accounting database")

        self.dbd_conf.write_text("\n".join([
            "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}",
            "DbdHost=localhost", f"DbdPort={dbd_port}", "SlurmUser=root",
            f"LogFile={self.logs / 'slurmdbd.log'}", f"PidFile={self.root / 'slurmdbd.pid'}",
            "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1", f"StoragePort={db_port}",
            "StorageUser=slurm", f"StoragePass={DB_PASSWORD}", "StorageLoc=slurm_acct_db", "",
        ]))
        os.chmod(self.dbd_conf, 0o600)
        self.conf.write_text("\n".join([
            f"ClusterName={CLUSTER}", "SlurmctldHost=localhost", f"SlurmctldPort={ctld_port}", f"SlurmdPort={slurmd_port}",
            # cred_expire: a requeued job may start again after this many seconds (default 120; 5 is Slurm's
            # minimum, below it Slurm falls back to 120): each requeue in tests/test_slurm.py waits this long
            "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket},cred_expire=5", "CredType=cred/munge",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={self.root / 'state'}", f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}", f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.logs / 'slurmctld.log'}", f"SlurmdLogFile={self.logs / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "MpiDefault=none",
            "MailProg=/bin/true", "KillWait=5", "ReturnToService=2", "SchedulerParameters=sched_interval=2",
            "AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=localhost",
            f"AccountingStoragePort={dbd_port}", f"AccountingStoragePass={self.munge_socket}",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
            "PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP", "",
        ]))

        slurmdbd = self._start("slurmdbd", [which("slurmdbd"), "-D"])
        wait_for("slurmdbd", lambda: port_open(dbd_port), 60, self.logs / "slurmdbd.log", slurmdbd)
        self._run([which("sacctmgr"), "-i", "add", "cluster", CLUSTER], "sacctmgr add cluster")
        slurmctld = self._start("slurmctld", [which("slurmctld"), "-D", "-c"])
        wait_for("slurmctld", lambda: port_open(ctld_port), 30, self.logs / "slurmctld.log", slurmctld)
        slurmd = self._start("slurmd", [which("slurmd"), "-D", "-N", "localhost"])

        def node_idle():
            out = subprocess.run([which("sinfo"), "-h", "-N", "-o", "%T"], capture_output=True, text=True,
                                 env=self.client_env(), timeout=10).stdout
            return out.strip().startswith("idle")

        wait_for("slurmd (node idle)", node_idle, 60, self.logs / "slurmd.log", slurmd)
        log(f"local SLURM cluster up in {time.time() - start:.1f} s: one node, {cpus} CPUs, {memory_mb} MB, {self.root}")

    def job_processes(self) -> list[int]:
        """PIDs of this cluster's job processes: slurmstepd and the jobs' own processes, recognised by
        this cluster's slurm.conf path in their environment (a job's also has SLURM_JOB_ID)."""
        mine = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if mine in environ and (comm == "slurmstepd" or any(e.startswith(b"SLURM_JOB_ID=") for e in environ)):
                pids.append(int(entry.name))
        return [pid for pid in pids if _alive(pid)]

    def drain(self, timeout: float = 30) -> None:
        """Cancel every job still in the queue and wait for the node's job processes to end, so that no
        slurmstepd is left waiting for a slurmd that is gone."""
        ctld = self.pids / "slurmctld"
        if ctld.exists() and _alive(int(ctld.read_text())):
            try:
                queued = subprocess.run([which("squeue") or "squeue", "-h", "-o", "%i"], capture_output=True,
                                        text=True, env=self.client_env(), timeout=10).stdout.split()
                if queued:
                    subprocess.run([which("scancel") or "scancel", *queued], env=self.client_env(), timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        deadline = time.time() + timeout
        while time.time() < deadline and self.job_processes():
            time.sleep(0.2)

    def down(self, log=print) -> None:
        """Drain the queue, then SIGTERM each daemon this cluster started (by the PID recorded at start),
        SIGKILL after 10 s; job processes still left (found by `job_processes`) get SIGKILL."""
        self.drain()
        for name in DAEMONS:
            pid_file = self.pids / name
            if not pid_file.exists():
                continue
            pid = int(pid_file.read_text())
            if _signal(pid, signal.SIGTERM):
                deadline = time.time() + 10
                while time.time() < deadline and _alive(pid):
                    time.sleep(0.1)
                if _alive(pid):
                    _signal(pid, signal.SIGKILL)
            pid_file.unlink()
        for pid in self.job_processes():
            _signal(pid, signal.SIGKILL)
        log(f"local SLURM cluster under {self.root} stopped")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (our own child, not yet reaped) is not alive
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _signal(pid: int, sig) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["install", "up", "down"])
    ap.add_argument("dir", nargs="?", help="private directory of the cluster (up: a new temporary one by default)")
    args = ap.parse_args(argv)
    if args.action == "install":
        try:
            ensure_packages(log=lambda m: print(m, file=sys.stderr))
        except (ClusterError, subprocess.TimeoutExpired, OSError) as exc:
            print(f"local_slurm: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.action == "down":
        if not args.dir:
            ap.error("down needs the cluster's directory")
        LocalSlurm(args.dir).down(log=lambda m: print(m, file=sys.stderr))
        return 0
    root = args.dir or tempfile.mkdtemp(prefix="aim-slurm-")
    cluster = LocalSlurm(root)
    try:
        cluster.up(log=lambda m: print(m, file=sys.stderr))
    except (ClusterError, subprocess.TimeoutExpired, OSError) as exc:
        cluster.down(log=lambda m: None)
        print(f"local_slurm: {exc}", file=sys.stderr)
        return 1
    print(f"export SLURM_CONF={cluster.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
