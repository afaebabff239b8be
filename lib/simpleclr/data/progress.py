"""Progress of the slow data steps (download, verify, extract, decode), on a terminal or a log.

On a terminal it is a tqdm bar (count, rate, ETA). Elsewhere (``make report`` piped to a file, CI,
a notebook's captured stderr) a bar's carriage returns make one unreadable line, so it writes a
plain line when the step starts, one at most every ``interval`` seconds with count and ETA, and
one when it ends. Steps with fewer than ``min_total`` items say nothing.
"""
from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Optional, TextIO

INTERVAL_S = 15.0


def _fmt_count(n: float, unit: str) -> str:
    if unit == "B":
        for scale, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if n >= scale:
                return f"{n / scale:.1f} {name}"
        return f"{n:.0f} B"
    return f"{n:,.0f} {unit}"


def _fmt_s(s: float) -> str:
    s = max(0.0, s)
    return f"{s:.0f}s" if s < 60 else f"{s // 60:.0f}m{s % 60:02.0f}s"


class Progress:
    """``with Progress(total, "extracting x.zip", "files") as p: ... p.update(k)``."""

    def __init__(self, total: Optional[int], desc: str, unit: str = "it", *, initial: int = 0,
                 min_total: int = 0, file: Optional[TextIO] = None,
                 interval: float = INTERVAL_S) -> None:
        self.total, self.desc, self.unit, self.done = total, desc, unit, initial
        self.file = file if file is not None else sys.stderr
        self.interval = interval
        self.quiet = total is not None and total < min_total
        self._bar = None
        self._t0 = self._last = time.monotonic()
        self._initial = initial

    def __enter__(self) -> "Progress":
        if self.quiet:
            return self
        if getattr(self.file, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            scale = self.unit == "B"
            self._bar = tqdm(total=self.total, initial=self.done, desc=self.desc, unit=self.unit,
                             unit_scale=scale, unit_divisor=1024 if scale else 1000, file=self.file)
        else:
            of = f" of {_fmt_count(self.total, self.unit)}" if self.total is not None else ""
            self._say(f"{self.desc}: started{of}")
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._say(self._status(now))

    def _status(self, now: float) -> str:
        elapsed = now - self._t0
        text = f"{self.desc}: {_fmt_count(self.done, self.unit)}"
        if self.total:
            text += f" of {_fmt_count(self.total, self.unit)} ({100 * self.done / self.total:.0f}%)"
            rate = (self.done - self._initial) / elapsed if elapsed > 0 else 0.0
            if rate > 0:
                text += f", ETA {_fmt_s((self.total - self.done) / rate)}"
        return text + f", {_fmt_s(elapsed)} elapsed"

    def _say(self, line: str) -> None:
        print(line, file=self.file, flush=True)

    def __exit__(self, kind: Optional[type], value: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if self._bar is not None:
            self._bar.close()
        elif not self.quiet and kind is None:
            self._say(f"{self.desc}: done, {_fmt_count(self.done, self.unit)} in "
                      f"{_fmt_s(time.monotonic() - self._t0)}")
