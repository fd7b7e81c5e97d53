"""A real single-node Slurm cluster for the tests: munged, slurmctld and slurmd of Debian's packages.

``SlurmCluster(tmp).start()`` writes a minimal ``slurm.conf`` (this machine as the one node,
no accounting storage, every state file under ``tmp``), starts its own munged (own key and
socket), slurmctld and slurmd, and waits until the node takes jobs. ``env()`` is the
environment for Slurm's client commands (``SLURM_CONF``). ``stop()`` ends exactly the
daemons it started, by their PIDs. ``why_unavailable()`` says why no cluster can be
brought up here (not root, no packages and no apt-get), or None.

Run it by hand: ``python tests/slurm_cluster.py DIR`` starts a cluster and prints how to use
and stop it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
PACKAGES = ("slurmctld", "slurmd", "munge", "slurm-client")
CLIENT = ("sbatch", "squeue", "srun", "scontrol", "sinfo", "munge")
RUN_CONF = "/run/slurm/conf"
SYSTEM_CONF = "/etc/slurm/slurm.conf"
MUNGE_SOCKET = "/run/munge/munge.socket.2"


def _sbin(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None)


def installed() -> bool:
    return all(_sbin(n) for n in (*DAEMONS, *CLIENT))


def install() -> str | None:
    """Install Debian's Slurm packages when missing; None on success, else why not."""
    if installed():
        return None
    if os.geteuid() != 0:
        return "Slurm is not installed and installing it needs root"
    if shutil.which("apt-get") is None:
        return "Slurm is not installed and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
    ):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            return f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}"
    return None if installed() else "Slurm's commands are still missing after apt-get install"


def why_unavailable() -> str | None:
    """None when a cluster can be started here (installing Slurm if needed), else the reason."""
    if sys.platform != "linux":
        return "Slurm runs on Linux only"
    if os.geteuid() != 0:
        return "starting slurmd needs root (it launches jobs as their users)"
    if os.path.exists(SYSTEM_CONF):
        return f"this machine has its own Slurm ({SYSTEM_CONF}), which jobs' srun would read; the test leaves it alone"
    return install()


def munge_works() -> bool:
    """Whether a munged answers on the default socket."""
    if not os.path.exists(MUNGE_SOCKET):
        return False
    proc = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
    return proc.returncode == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo") as fh:
        total_kb = next(int(line.split()[1]) for line in fh if line.startswith("MemTotal:"))
    return max(512, int(total_kb / 1024 * 0.8))


class SlurmCluster:
    def __init__(self, root: Path, cpus: int = 2) -> None:
        self.root = Path(root)
        self.cpus = cpus
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        # munged's default socket: slurmd asks slurmctld for slurm.conf (configless) before it
        # knows any AuthInfo, so the default is the one every daemon and command can use.
        self.socket = Path(MUNGE_SOCKET)
        self.pids: dict[str, int] = {}  # the daemons this object started, in start order
        self._procs: dict[str, subprocess.Popen] = {}
        self.port = _free_port()

    def env(self) -> dict[str, str]:
        """The environment for Slurm's client commands and for jobs (they inherit it)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_files(self) -> None:
        for sub in ("state", "spool", "log", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        r = self.root
        self.conf.write_text(
            f"""ClusterName=meshsr-test
SlurmctldHost={self.node}
SlurmctldPort={self.port}
SlurmctldParameters=enable_configless
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName={self.node} CPUs={self.cpus} RealMemory={_memory_mb()} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.root / "log" / f"{name}.out", "w") as log:
            proc = subprocess.Popen(
                [_sbin(name) or name, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,
            )
        self.pids[name] = proc.pid
        self._procs[name] = proc

    def _wait(self, what: str, ready, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            dead = [n for n, p in self._procs.items() if p.poll() is not None]
            if dead:
                break
            time.sleep(0.3)
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted((self.root / "log").glob("*"))
        )
        self.stop()
        raise RuntimeError(f"Slurm test cluster: {what} did not come up\n{logs}")

    def _client_ok(self, *cmd: str) -> bool:
        proc = subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, timeout=30)
        return proc.returncode == 0 and bool(proc.stdout.strip())

    def start(self) -> SlurmCluster:
        self._write_files()
        m = self.root / "munge"
        if not munge_works():  # a munged the system runs already is used as it is (and left running)
            self.socket.parent.mkdir(parents=True, exist_ok=True)
            self._spawn(
                "munged",
                [
                    "--foreground",
                    "--force",
                    f"--socket={self.socket}",
                    f"--key-file={m / 'munge.key'}",
                    f"--pid-file={m / 'munged.pid'}",
                    f"--seed-file={m / 'munged.seed'}",
                    f"--log-file={self.root / 'log' / 'munged.log'}",
                ],
            )
            self._wait("munged", munge_works)
        self._spawn("slurmctld", ["-D", "-f", str(self.conf)])
        self._wait("slurmctld", lambda: self._client_ok("scontrol", "ping"))
        # Configless: slurmd fetches slurm.conf from slurmctld and links it at /run/slurm/conf,
        # where srun inside a job finds it (the jobstep plugin drops SLURM_CONF from srun's
        # environment, as on a real cluster, whose nodes have their own slurm.conf).
        self._spawn("slurmd", ["-D", "--conf-server", f"{self.node}:{self.port}", "-N", self.node])
        self._wait("slurmd", lambda: self._client_ok("sinfo", "--noheader", "--states=idle", "--format=%n"))
        return self

    def stop(self) -> None:
        """End the daemons this object started, by PID, newest first; wait for each to exit."""
        for name in reversed(list(self.pids)):
            proc = self._procs[name]
            if proc.poll() is None:
                os.kill(self.pids[name], signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.kill(self.pids[name], signal.SIGKILL)
                    proc.wait(timeout=30)
        self.pids.clear()
        link = Path(RUN_CONF)
        if link.is_symlink() and os.path.realpath(link).startswith(str(self.root.resolve())):
            link.unlink()  # slurmd's configless link into our spool directory


if __name__ == "__main__":
    reason = why_unavailable()
    if reason:
        sys.exit(f"no Slurm cluster: {reason}")
    cluster = SlurmCluster(Path(sys.argv[1]).resolve()).start()
    print(f"export SLURM_CONF={cluster.conf}")
    print(f"stop with: kill {' '.join(str(p) for p in reversed(cluster.pids.values()))}")
