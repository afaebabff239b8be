"""One line of progress for a stage running in another process (a papermill notebook, torchrun).

The training loop rewrites its run folder's ``progress.json`` every few seconds
(:meth:`RunDir.write_progress`); this reads it and shows the step, the share done and the time
left. On a terminal the line is rewritten in place every second; on a log (a file, CI) a plain
line is written every minute, so a five-minute cell is never silent and never floods the log.
"""
from __future__ import annotations

import shutil
import sys
import threading
import time
from types import TracebackType
from typing import Optional, TextIO

from .rundir import RunDir


def fmt_seconds(seconds: Optional[float]) -> str:
    """``42s``, ``3m07s``, ``1h05m``; ``?`` for unknown."""
    if seconds is None:
        return "?"
    whole = round(max(0.0, float(seconds)))  # rounded once, so 179.6 s is 3m00s, never 2m60s
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    hours, minutes = divmod(round(whole / 60), 60)
    return f"{hours}h{minutes:02d}m"


def progress_line(tag: str, progress: Optional[dict], elapsed_s: float) -> str:
    """``tag: step 120/400 (30%), 1m10s, about 2m44s left`` (or just the elapsed time)."""
    step = (progress or {}).get("step") or 0
    total = (progress or {}).get("total_steps") or 0
    if not total:
        return f"{tag}: running, {fmt_seconds(elapsed_s)}"
    text = f"{tag}: step {step}/{total} ({100 * step / total:.0f}%), {fmt_seconds(elapsed_s)}"
    if step:
        left = progress["elapsed_s"] * (total - step) / step  # type: ignore[index]
        text += f", about {fmt_seconds(left)} left"
    return text


class RunWatch:
    """``with RunWatch(tag, RunDir(path)): execute_notebook(...)`` shows that run's progress."""

    def __init__(self, tag: str, run: RunDir, *, file: Optional[TextIO] = None,
                 interval: Optional[float] = None, tty: Optional[bool] = None) -> None:
        self.tag, self.run = tag, run
        self.file = file if file is not None else sys.stdout
        # tty=False: plain lines even on a terminal, where several runs share it
        self.tty = bool(getattr(self.file, "isatty", lambda: False)()) if tty is None else tty
        self.interval = interval if interval is not None else (1.0 if self.tty else 60.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="runwatch", daemon=True)
        self._t0 = time.monotonic()
        self._drawn = False

    def __enter__(self) -> "RunWatch":
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def line(self) -> str:
        return progress_line(self.tag, self.run.read_progress(), time.monotonic() - self._t0)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            text = self.line()
            if self.tty:
                width = shutil.get_terminal_size((100, 20)).columns - 1
                self.file.write("\r" + text[:width] + "\x1b[K")
                self._drawn = True
            else:
                self.file.write(text + "\n")
            self.file.flush()

    def __exit__(self, kind: Optional[type], value: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self._stop.set()
        self._thread.join()
        if self._drawn:  # leave the line clear for the run's closing line
            self.file.write("\r\x1b[K")
            self.file.flush()
