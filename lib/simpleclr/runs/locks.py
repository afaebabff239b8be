"""One exclusive inter-process lock on a file, for the data cache (builders wait their turn) and the
run folder (a second writer is refused). Standard library (and simpleclr.errors) only.

The lock is ``flock`` on an open file, so the kernel lets go of it when its process dies, however it
dies: a lock left by a killed process never blocks anyone. The holder writes its pid into the file,
so whoever finds it taken can say who has it, and removes the file as it lets go (a taker checks
that the file it locked is still the one at the path, else it locks the new one).
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import IO, Callable, Iterator, Optional

from ..errors import SimpleCLRError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; atomic renames still keep files whole
    fcntl = None  # type: ignore[assignment]


class LockHeld(SimpleCLRError, RuntimeError):
    """Another process holds the lock (``pid`` None when it has not written its pid yet)."""

    def __init__(self, path: Path, pid: Optional[int]):
        who = f"pid {pid}" if pid else "a process that has not yet written its pid"
        super().__init__(f"{path} is held by {who}")
        self.path, self.pid = path, pid


def holder(f: IO[str], tries: int = 10) -> Optional[int]:
    """The pid written in a lock file, waiting briefly for a holder that has just taken it."""
    for i in range(tries):
        f.seek(0)
        text = f.read().strip()
        if text.isdigit():
            return int(text)
        if i + 1 < tries:
            time.sleep(0.05)
    return None


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
            pid = holder(f)
            if not wait:
                f.close()
                raise LockHeld(path, pid) from None
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
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # still held: nobody can take this file once it is unlinked
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()
