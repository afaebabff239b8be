"""Live curves: the TensorBoard events a training run writes hold its jsonl rows' values."""
from __future__ import annotations

import numpy as np

from helpers.curves import read_curves
from simpleclr.runs import curves
from simpleclr.runs.curves import EPOCH_TAGS, STEP_TAGS, CurveWriter


def _f32(x: float) -> float:
    return float(np.float32(x))  # TensorBoard stores scalars as float32


def test_the_events_hold_the_rows_and_a_resume_purges_what_a_killed_session_wrote(tmp_path):
    steps = [{"step": s, "epoch": s / 2, "loss": 4.0 - 0.1 * s, "lr": 0.01 * s} for s in range(1, 7)]
    epochs = [{"epoch": e, "step": 2 * e, "loss": 4.0 - 0.2 * e, "lr": 0.02 * e, "grad_norm": 1.5,
               "images_per_s": 100.0, "knn_top1": 10.0 * e, "val_top1": None} for e in (1, 2, 3)]
    first = CurveWriter(tmp_path, start_step=0)
    for e in range(3):  # a session killed after epoch 3, whose checkpoint is epoch 2's (step 4)
        first.log(steps[2 * e:2 * e + 2], epochs[e])
    first.close()
    assert read_curves(tmp_path)["train/loss"][-1][0] == 6
    resumed = CurveWriter(tmp_path, start_step=4)
    changed = [{**r, "loss": r["loss"] + 1.0} for r in steps[4:]]  # epoch 3 redone, other values
    resumed.log(changed, {**epochs[2], "loss": 9.0})
    resumed.close()
    got = read_curves(tmp_path)
    expected = steps[:4] + changed
    assert got["train/loss"] == [(r["step"], _f32(r["loss"])) for r in expected]
    assert got["train/lr"] == [(r["step"], _f32(r["lr"])) for r in expected]
    assert got["epoch/loss"] == [(2, _f32(epochs[0]["loss"])), (4, _f32(epochs[1]["loss"])), (6, 9.0)]
    assert got["monitor/knn_top1"] == [(2, 10.0), (4, 20.0), (6, 30.0)]
    assert "val/top1" not in got  # None is not a point
    assert set(got) <= set(STEP_TAGS.values()) | set(EPOCH_TAGS.values())


def test_without_tensorboard_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(curves, "available", lambda: False)
    writer = CurveWriter(tmp_path, start_step=0)
    writer.log([{"step": 1, "loss": 1.0, "lr": 0.1}], {"step": 1, "loss": 1.0})
    writer.close()
    assert not (tmp_path / curves.CURVES_DIR).exists()


def test_tensorboard_is_installed_where_the_tests_run():
    """The test extra installs it, so the checks above never pass by skipping."""
    assert curves.available()
