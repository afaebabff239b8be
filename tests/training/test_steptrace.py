"""The step trace (steps.jsonl) without training: its windows, row count and resume rules."""
from __future__ import annotations

import math

import pytest
import torch

from simpleclr.training.parts import steptrace
from simpleclr.runs.rundir import RunDir
from simpleclr.training.parts.steptrace import STEP_ROWS, StepTrace, window


@pytest.mark.parametrize("total", [1, 7, 199, 200, 201, 390, 401, 1000, 78125])
def test_any_run_has_at_most_STEP_ROWS_rows_plus_its_last_step(total):
    every = window(total)
    assert every == max(1, math.ceil(total / STEP_ROWS))
    trace = StepTrace.start(total, steps_per_epoch=390, device=torch.device("cpu"))
    for step in range(1, total + 1):
        trace.add(torch.tensor(float(step)), step, lr=0.1)
    rows = trace.rows()
    steps = [r["step"] for r in rows]
    assert len(rows) <= STEP_ROWS + 1 and steps[-1] == total
    assert steps == sorted(set(steps)) and all(s % every == 0 for s in steps[:-1])
    assert trace.rows() == [] and trace.steps == 0  # read once; nothing left open after the last step
    # each row is the mean over its window: here the steps' numbers, so the window's middle (summed
    # in float32 on the device, hence the tolerance)
    starts = [0] + steps[:-1]
    assert [r["loss"] for r in rows] == pytest.approx([(a + 1 + b) / 2 for a, b in zip(starts, steps)], rel=1e-5)
    assert [r["epoch"] for r in rows] == [s / 390 for s in steps]


def test_resume_goes_on_from_the_checkpoints_open_window():
    ckpt = {"epoch": 1, "step": 2, "trace": {"loss_sum": torch.tensor(3.0), "steps": 2}}
    trace = steptrace.resume(ckpt, 600, 2, torch.device("cpu"))
    assert (trace.every, trace.steps, float(trace.loss_sum)) == (3, 2, 3.0)
    trace.add(torch.tensor(6.0), 3, lr=0.5)
    assert trace.rows() == [{"step": 3, "epoch": 1.5, "loss": 3.0, "lr": 0.5}]
    fresh = steptrace.resume(None, 8, 2, torch.device("cpu"))
    assert (fresh.every, fresh.steps, float(fresh.loss_sum)) == (1, 0, 0.0)


def test_a_format_1_checkpoint_resumes_without_a_trace(tmp_path):
    """Its rows would begin mid-run: better no trace (the report then draws per epoch)."""
    run = RunDir(tmp_path)
    run.log_steps([{"step": s, "epoch": s / 2, "loss": 1.0, "lr": 0.1} for s in (1, 2, 3)])
    old = {"epoch": 1, "step": 2}  # no "trace": a format 1 checkpoint
    assert steptrace.resume(old, 8, 2, torch.device("cpu")) is None
    steptrace.drop_rows_past(run, old, keep_trace=False)
    assert run.read_steps() == []
    run.log_steps([{"step": s, "epoch": s / 2, "loss": 1.0, "lr": 0.1} for s in (1, 2, 3)])
    steptrace.drop_rows_past(run, old, keep_trace=True)
    assert [r["step"] for r in run.read_steps()] == [1, 2]
    steptrace.drop_rows_past(run, None, keep_trace=True)  # killed before its first checkpoint
    assert run.read_steps() == []
