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
from pathlib import Path
from typing import Any, Iterable, Optional

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
    wrote at later steps are purged. Does nothing where tensorboard is absent."""

    def __init__(self, run_path: Path, start_step: int):
        self._writer: Optional[Any] = None
        if available():
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(run_path) / CURVES_DIR), purge_step=start_step + 1)

    def log(self, step_rows: Iterable[dict], epoch_row: dict) -> None:
        """One epoch's step-trace rows and its metrics row, as written to the jsonl files."""
        if self._writer is None:
            return
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
            self._writer.close()
