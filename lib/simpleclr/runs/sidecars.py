"""Optional files a training run writes beside its record: the TensorBoard events, progress.json
and the step trace (steps.jsonl). They are for watching a run and drawing its curves; the record
is metrics.jsonl, result.json and the checkpoints. A sidecar that cannot be written (its folder
is a file, the disk refuses it, it becomes unwritable mid-run) must not cost the run: the first
failure prints one warning naming the path, and the run trains on without that file.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from ..errors import one_line
from ..types import PathLike

T = TypeVar("T")


def _reason(e: BaseException) -> str:
    return one_line(getattr(e, "strerror", None) or str(e) or type(e).__name__, 120)


class Sidecar:
    """One optional file (or folder) of a run. :meth:`write` calls a writer; the first failure
    (any ``Exception``: a TensorBoard writer thread fails in ways of its own) warns once, and every
    later call does nothing. ``failed`` says whether it gave up."""

    def __init__(self, path: PathLike, what: str):
        self.path, self.what = Path(path), what
        self.failed: Optional[str] = None  # the reason it gave up, once it has

    def write(self, writer: Callable[..., T], *args: Any, **kwargs: Any) -> Optional[T]:
        """``writer(*args, **kwargs)``, or None once the sidecar has given up or when it fails."""
        if self.failed is not None:
            return None
        try:
            return writer(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - an optional file never stops a run
            self.give_up(e)
            return None

    def give_up(self, e: BaseException) -> None:
        """Stop writing, with the one warning that says why and what is still whole."""
        if self.failed is None:
            self.failed = _reason(e)
            print(f"simpleclr: warning: cannot write the {self.what} {self.path} ({self.failed}): "
                  "training goes on without it; the run's record (metrics.jsonl, result.json, "
                  "checkpoints) is complete", file=sys.stderr, flush=True)
