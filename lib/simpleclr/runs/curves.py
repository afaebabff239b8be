"""Live curves: a training run's step trace and epoch metrics, also as TensorBoard event files.

While a long run trains, ``tensorboard --logdir outputs`` (``make tensorboard``) shows its loss
along the steps, learning rate, kNN monitor and validation accuracy. The files are written only
where the optional ``tensorboard`` package is installed, by rank 0, into ``<run>/tensorboard``;
``steps.jsonl`` and ``metrics.jsonl`` stay the record (the report reads only them), and the events
hold the same values. A resumed run purges the events a killed session wrote past its checkpoint,
as it drops those rows from the jsonl files.
"""
from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any, Iterable, Optional

from .sidecars import Sidecar

__all__ = ["CURVES_DIR", "STEP_TAGS", "EPOCH_TAGS", "available", "CurveWriter"]

CURVES_DIR = "tensorboard"
# steps.jsonl key -> tag, one point per step-trace row (at its step)
STEP_TAGS = {"loss": "train/loss", "lr": "train/lr"}
# metrics.jsonl key -> tag, one point per epoch (at the epoch's last step)
EPOCH_TAGS = {"loss": "epoch/loss", "lr": "epoch/lr", "grad_norm": "epoch/grad_norm",
              "knn_top1": "monitor/knn_top1", "val_top1": "val/top1", "val_top5": "val/top5",
              "images_per_s": "speed/images_per_s"}


def available() -> bool:
    """True where the optional ``tensorboard`` package is installed."""
    return importlib.util.find_spec("tensorboard") is not None


class CurveWriter:
    """Event files for one run folder, written from step ``start_step`` on: events a killed session
    wrote at later steps are purged. Does nothing where tensorboard is absent. The events are
    optional (:class:`~simpleclr.runs.sidecars.Sidecar`): when their folder cannot be made or
    written, it warns once, naming it, and the run goes on without them."""

    def __init__(self, run_path: Path, start_step: int):
        self._writer: Optional[Any] = None
        self.sidecar = Sidecar(Path(run_path) / CURVES_DIR, "TensorBoard events folder")
        if available():
            from torch.utils.tensorboard import SummaryWriter

            self._writer = self.sidecar.write(SummaryWriter, str(self.sidecar.path),
                                              purge_step=start_step + 1)
            if self._writer is not None:
                _quiet_writer_thread(self._writer)

    def log(self, step_rows: Iterable[dict], epoch_row: dict) -> None:
        """One epoch's step-trace rows and its metrics row, as written to the jsonl files."""
        if self._writer is not None:
            self.sidecar.write(self._log, list(step_rows), epoch_row)
        if self.sidecar.failed is not None:
            self._writer = None  # its thread has died or its folder is gone: left, never closed

    def _log(self, step_rows: list[dict], epoch_row: dict) -> None:
        for row in step_rows:
            for key, tag in STEP_TAGS.items():
                if row.get(key) is not None:
                    self._writer.add_scalar(tag, row[key], global_step=row["step"])
        for key, tag in EPOCH_TAGS.items():
            if epoch_row.get(key) is not None:
                self._writer.add_scalar(tag, epoch_row[key], global_step=epoch_row["step"])
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self.sidecar.write(self._writer.close)
            self._writer = None


def _quiet_writer_thread(writer: Any) -> None:
    """TensorBoard writes events from a thread of its own that, when a write fails, re-raises the
    error (a traceback on stderr) after keeping it for the next ``add_scalar`` or ``flush`` to
    raise: :class:`CurveWriter` turns that one into its warning. This keeps the thread from
    printing the traceback too, by marking the thread for :func:`_excepthook`."""
    worker = getattr(getattr(getattr(getattr(writer, "file_writer", None), "event_writer", None),
                             "_async_writer", None), "_worker", None)
    if isinstance(worker, threading.Thread):
        worker.simpleclr_sidecar = True  # type: ignore[attr-defined]
        if threading.excepthook is not _excepthook:
            global _previous_hook
            _previous_hook = threading.excepthook
            threading.excepthook = _excepthook


_previous_hook: Any = None


def _excepthook(args: Any) -> None:
    """Silence the failure of a sidecar's writer thread (reported once by its Sidecar); pass
    every other thread's failure to the hook that was there before."""
    if getattr(args.thread, "simpleclr_sidecar", False):
        return
    (_previous_hook or threading.__excepthook__)(args)
