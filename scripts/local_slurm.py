"""A one-node SLURM cluster on this machine, for the tests of ``simpleclr plan run --executor slurm``.

    python scripts/local_slurm.py start FOLDER    # install if missing (root), configure, start
    python scripts/local_slurm.py stop FOLDER     # stop the daemons started into FOLDER

``start`` installs Debian's ``slurm-wlm`` and ``munge`` with apt-get when they are missing and this
process is root, writes ``slurm.conf`` into FOLDER (the host as the one node with ``nproc`` CPUs,
one partition, ``proctrack/linuxproc`` and ``task/none``: no cgroups needed), starts ``munged``,
``slurmctld`` and ``slurmd`` in the foreground as children of this process, on free ports and a
private munge socket (a system SLURM or munge, if any, is left alone), waits until the node is idle
and prints ``export SLURM_CONF=FOLDER/slurm.conf``: the variable the SLURM commands read. ``stop``
ends those three daemons by the pids written in FOLDER, nothing else. The pytest fixture
(``tests/study/test_slurm.py``) calls :func:`start` and :meth:`LocalSlurm.stop` the same way.

Finished jobs stay known to ``scontrol`` for an hour (``MinJobAge``): there is no accounting
database here, so ``sacct`` has nothing to read and the plan's state reader falls back to
``scontrol`` (``simpleclr.study.slurm``), as it would on a cluster without accounting.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")
PARTITION = "debug"


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be started here; the message is the one line a skipped test shows."""


def _sbin(name: str) -> Optional[str]:
    return shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name)
                                       if p.is_file()), None)


def install() -> None:
    """apt-get install the packages when a daemon is missing; SlurmUnavailable where it cannot."""
    if all(_sbin(d) for d in DAEMONS) and shutil.which("sbatch"):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable("SLURM is not installed and installing it needs root (apt-get install slurm-wlm munge)")
    if not shutil.which("apt-get"):
        raise SlurmUnavailable("SLURM is not installed and there is no apt-get to install it with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=300",
                 "--no-install-recommends", *PACKAGES]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            raise SlurmUnavailable(f"{' '.join(cmd)} failed: {tail[0]}")
    if not all(_sbin(d) for d in DAEMONS):
        raise SlurmUnavailable(f"apt-get installed {' '.join(PACKAGES)} but {', '.join(DAEMONS)} are not all there")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder: Path) -> Path:
    """slurm.conf for a one-node cluster whose every file lives in ``folder``."""
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool", "jobs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(f"""\
ClusterName=simpleclr-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder / "munge.socket"}
StateSaveLocation={folder / "state"}
SlurmdSpoolDir={folder / "spool"}
SlurmctldPidFile={folder / "slurmctld.pid"}
SlurmdPidFile={folder / "slurmd.pid"}
SlurmctldLogFile={folder / "slurmctld.log"}
SlurmdLogFile={folder / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait=10
SchedulerParameters=sched_interval=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


@dataclasses.dataclass
class LocalSlurm:
    folder: Path
    conf: Path
    processes: dict

    @property
    def env(self) -> dict:
        return {"SLURM_CONF": str(self.conf)}

    def stop(self) -> None:
        """Stop the daemons this object started, by pid, last started first."""
        for name in reversed(DAEMONS):
            proc = self.processes.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        (self.folder / "daemons.pid").unlink(missing_ok=True)


def _wait_idle(env: dict, procs: dict, folder: Path, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    state = ""
    while time.time() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                log = folder / f"{name}.log"
                tail = log.read_text().strip().splitlines()[-1:] if log.is_file() else []
                raise SlurmUnavailable(f"{name} exited with {proc.returncode}: {tail[0] if tail else 'no log'}")
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=env, capture_output=True, text=True)
        state = out.stdout.strip()
        if out.returncode == 0 and state == "idle":
            return
        time.sleep(0.5)
    raise SlurmUnavailable(f"the local SLURM node did not become idle in {timeout:.0f} s (sinfo: {state or 'nothing'})")


def start(folder: Path) -> LocalSlurm:
    """Install if needed, configure into ``folder`` and start the three daemons; the node is idle
    on return. Raises SlurmUnavailable (one line) where it cannot."""
    install()
    folder = Path(folder).resolve()
    conf = write_config(folder)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    key = Path("/etc/munge/munge.key")
    if not key.is_file():
        raise SlurmUnavailable(f"{key} is missing: create it with mungekey (or reinstall munge)")
    commands = {
        "munged": [_sbin("munged"), "--foreground", "--force", f"--socket={folder / 'munge.socket'}",
                   f"--key-file={key}", f"--pid-file={folder / 'munged.pid'}",
                   f"--log-file={folder / 'munged.log'}", f"--seed-file={folder / 'munge.seed'}"],
        "slurmctld": [_sbin("slurmctld"), "-D", "-i", "-f", str(conf)],
        "slurmd": [_sbin("slurmd"), "-D", "-f", str(conf)],
    }
    procs: dict = {}
    local = LocalSlurm(folder, conf, procs)
    try:
        for name, cmd in commands.items():
            with open(folder / f"{name}.out", "ab") as out:
                # a session of their own: a Ctrl-C meant for the caller does not reach them
                procs[name] = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
            if name == "munged":
                _wait_for(folder / "munge.socket", procs[name])
        (folder / "daemons.pid").write_text("".join(f"{n} {p.pid}\n" for n, p in procs.items()))
        _wait_idle(env, procs, folder)
    except BaseException:
        local.stop()
        raise
    return local


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None or time.time() > deadline:
            raise SlurmUnavailable(f"munged did not open its socket {path} (exit code {proc.poll()})")
        time.sleep(0.1)


def stop_folder(folder: Path) -> None:
    """Stop the daemons a ``start`` wrote into ``folder``'s daemons.pid (from another process)."""
    pids = folder / "daemons.pid"
    if not pids.is_file():
        return
    for line in reversed(pids.read_text().splitlines()):
        name, pid = line.split()
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(300):
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    pids.unlink()


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("start", "stop"))
    p.add_argument("folder", type=Path)
    ns = p.parse_args(argv)
    if ns.action == "stop":
        stop_folder(ns.folder.resolve())
        return 0
    try:
        local = start(ns.folder)
    except SlurmUnavailable as e:
        print(f"local SLURM: {e}", file=sys.stderr)
        return 1
    print(f"export SLURM_CONF={local.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
