"""The training loss along the steps, for a run folder's ``steps.jsonl`` (:mod:`simpleclr.runs.rundir`).

A run's metrics have one row per epoch, so a run of half an epoch has one point and no curve. The
step trace adds one row every ``every = max(1, ceil(total_steps / STEP_ROWS))`` steps and one at the
run's last step, so a run of any length has at most STEP_ROWS + 1 rows (one a step below
STEP_ROWS steps): ``{"step", "epoch" (= step / steps_per_epoch), "loss" (the mean since the row
before), "lr" (of the row's last step)}``.

:class:`StepTrace` sums the loss on the device; a due row waits there, so the trace adds no host
sync per step, and the loop reads an epoch's rows at its end (:meth:`StepTrace.rows`). The open
window (the steps since the last row) goes into the checkpoint (:meth:`StepTrace.state`), so a
resumed run logs the rows of an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from . import distributed

STEP_ROWS = 200  # about this many rows a run, whatever its length


def window(total_steps: int) -> int:
    """Steps per row for a run of ``total_steps``."""
    return max(1, math.ceil(total_steps / STEP_ROWS))


@dataclass
class StepTrace:
    """The rows due and the open window; every rank keeps one, rank 0 writes the rows."""

    every: int
    total_steps: int
    steps_per_epoch: int
    loss_sum: torch.Tensor  # of the open window, on the device
    steps: int = 0  # in the open window
    due: list = field(default_factory=list)  # (step, lr, loss sum on the device, steps)

    @classmethod
    def start(cls, total_steps: int, steps_per_epoch: int, device: torch.device,
              saved: Optional[dict] = None) -> "StepTrace":
        """A new trace, or one that goes on from :meth:`state` saved in a checkpoint."""
        saved = saved or {"loss_sum": torch.zeros(()), "steps": 0}
        return cls(window(total_steps), total_steps, steps_per_epoch,
                   saved["loss_sum"].to(device), int(saved["steps"]))

    def add(self, loss: torch.Tensor, step: int, lr: float) -> None:
        """Count the run's ``step``-th step: its loss (a device tensor) and the lr it used."""
        self.loss_sum += loss
        self.steps += 1
        if step % self.every == 0 or step == self.total_steps:
            self.due.append((step, lr, self.loss_sum, self.steps))
            self.loss_sum, self.steps = torch.zeros_like(self.loss_sum), 0

    def rows(self) -> list[dict]:
        """The due rows, read at once: one host sync and, on several processes, one all-reduce
        (every rank calls this at the same point), so a row's loss is the mean over ranks, as the
        metrics' epoch loss is. The open window's sum goes through the same all-reduce and every
        rank keeps the mean: rank 0's :meth:`state` in a checkpoint is then every rank's, and a
        resumed row spanning it is the same mean an uninterrupted run logs."""
        if not self.due and not self.steps:
            return []
        reduced = distributed.all_reduce_mean(torch.stack([d[2] for d in self.due] + [self.loss_sum]))
        self.loss_sum = reduced[-1].clone()
        sums = reduced[:-1].tolist()
        rows = [{"step": s, "epoch": s / self.steps_per_epoch, "loss": total / n, "lr": lr}
                for (s, lr, _, n), total in zip(self.due, sums)]
        self.due = []
        return rows

    def state(self) -> dict:
        """The open window, for the checkpoint (tensors and plain values only)."""
        return {"loss_sum": self.loss_sum.detach().cpu(), "steps": self.steps}


def resume(ckpt: Optional[dict], total_steps: int, steps_per_epoch: int, device) -> Optional[StepTrace]:
    """The step trace with the checkpoint's open window, a new one without a checkpoint, and None
    for a format 1 checkpoint, which has no trace (its rows would begin mid-run)."""
    if ckpt is not None and ckpt.get("trace") is None:
        return None
    return StepTrace.start(total_steps, steps_per_epoch, device, ckpt["trace"] if ckpt is not None else None)


def drop_rows_past(run, ckpt: Optional[dict], keep_trace: bool) -> None:
    """Drop the metrics and step-trace rows a killed run wrote into the run folder ``run`` past its
    checkpoint (all of them when it had none; the whole trace when it goes on without one): the
    resumed run writes them again."""
    epoch, step = (ckpt["epoch"], ckpt["step"]) if ckpt is not None else (0, 0)
    if run.metrics_path.exists():
        run.truncate_metrics([r for r in run.read_metrics() if r.get("epoch", 0) <= epoch])
    if run.steps_path.exists():
        run.truncate_steps([r for r in run.read_steps() if keep_trace and r.get("step", 0) <= step])
