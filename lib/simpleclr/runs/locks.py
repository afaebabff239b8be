"""One exclusive inter-process lock on a file, for the data cache (builders wait their turn) and the
run folder (a second writer is refused). Standard library (and simpleclr.errors) only.

The lock is ``flock`` on an open file, so the kernel lets go of it when its process dies, however it
dies: a lock left by a killed process never blocks anyone. The holder writes its pid and host into
the file (``12345 node07``), so whoever finds it taken can say who has it, and removes the file as
it lets go (a taker checks that the file it locked is still the one at the path, else it locks the
new one).

Across machines (SLURM jobs on several nodes writing run folders on a shared filesystem) the lock
holds only where the filesystem makes ``flock`` cluster-wide: NFSv4 (and NFSv3 with the lock
manager, ``nolock`` not set) and Lustre mounted with ``-o flock``; Lustre's ``localflock`` makes
it node-local (docs/multi-machine.md).
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import IO, Callable, Iterator, Optional

from ..errors import SimpleCLRError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; atomic renames still keep files whole
    fcntl = None  # type: ignore[assignment]


def holder_text(pid: Optional[int], host: Optional[str]) -> str:
    """``pid 123 on host node07`` (the host left out where the holder did not write it)."""
    if not pid:
        return "a process that has not yet written its pid"
    return f"pid {pid}" + (f" on host {host}" if host else "")


class LockHeld(SimpleCLRError, RuntimeError):
    """Another process holds the lock (``pid`` None when it has not written its pid yet; ``host``
    the machine it runs on)."""

    def __init__(self, path: Path, pid: Optional[int], host: Optional[str] = None):
        super().__init__(f"{path} is held by {holder_text(pid, host)}")
        self.path, self.pid, self.host = path, pid, host


def holder(f: IO[str], tries: int = 10) -> tuple[Optional[int], Optional[str]]:
    """(pid, host) written in a lock file, waiting briefly for a holder that has just taken it;
    (None, None) when none is written."""
    for i in range(tries):
        f.seek(0)
        words = f.read().split()
        if words and words[0].isdigit():
            return int(words[0]), (words[1] if len(words) > 1 else None)
        if i + 1 < tries:
            time.sleep(0.05)
    return None, None


def _same_file(f: IO[str], path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return False


def _acquire(path: Path, wait: bool, on_wait: Optional[Callable[[Optional[int]], None]]) -> IO[str]:
    assert fcntl is not None
    while True:
        f = open(path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, host = holder(f)
            if not wait:
                f.close()
                raise LockHeld(path, pid, host) from None
            if on_wait is not None:
                on_wait(pid)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        if _same_file(f, path):
            return f
        f.close()  # its holder removed it as it let go: take the file now at the path


@contextlib.contextmanager
def file_lock(path: Path, *, wait: bool = True,
              on_wait: Optional[Callable[[Optional[int]], None]] = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the block.

    Held by another process: ``wait`` blocks until it is free (calling ``on_wait(holder pid)``
    first), else :class:`LockHeld` is raised at once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    f = _acquire(path, wait, on_wait)
    try:
        f.truncate(0)
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
        f.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # still held: nobody can take this file once it is unlinked
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()
