"""What `plan run` shows while a notebook trains: one line per run from its progress.json, the
plan's estimate before it starts and its time left after each run."""
from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from simpleclr.study import estimate, plans
from simpleclr.runs.rundir import RunDir
from simpleclr.runs.watch import RunWatch, fmt_seconds, progress_line


def test_progress_line_gives_step_share_and_time_left():
    p = {"step": 100, "total_steps": 400, "elapsed_s": 60.0}
    assert progress_line("[1/3] a (pretrain)", p, 65.0) == \
        "[1/3] a (pretrain): step 100/400 (25%), 1m05s, about 3m00s left"
    assert progress_line("t", {"step": 0, "total_steps": 10, "elapsed_s": 0.0}, 3) == \
        "t: step 0/10 (0%), 3s"
    assert progress_line("t", None, 7200) == "t: running, 2h00m"  # a probe writes no steps
    assert [fmt_seconds(s) for s in (None, 59.4, 61, 3725)] == ["?", "59s", "1m01s", "1h02m"]
    # rounding never shows 60 of a unit: 2m59.6s is 3m00s, 59.7 s is 1m00s, 1h59m59s is 2h00m
    assert [fmt_seconds(s) for s in (179.6, 59.7, 7199.0, 3599.6)] == ["3m00s", "1m00s", "2h00m", "1h00m"]


def test_runwatch_writes_plain_lines_to_a_log_from_the_run_folder(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    out = io.StringIO()  # not a terminal: whole lines, no carriage returns
    with RunWatch("[2/5] sup (supervised)", run, file=out, interval=0.05):
        time.sleep(0.2)
        run.write_progress(30, 60, 12.0)
        time.sleep(0.3)
    lines = out.getvalue().splitlines()
    assert lines and "\r" not in out.getvalue()
    assert lines[0].startswith("[2/5] sup (supervised): running, ")
    assert lines[-1].startswith("[2/5] sup (supervised): step 30/60 (50%), ")
    assert lines[-1].endswith("about 12s left")


class _Run:
    def __init__(self, stage: str):
        self.config = type("C", (), {"stage": stage})()


def _plan(budget=None, smaller=None) -> plans.Plan:
    runs = {"a": _Run("pretrain"), "b": _Run("pretrain"), "c": _Run("linear_eval")}
    return plans.Plan(name="p", source=Path("p.yaml"), description="", outputs=Path("o"),
                      runs=runs, budget_min=budget, smaller=smaller)  # type: ignore[arg-type]


def test_plan_clock_sums_by_stage_warns_over_budget_and_scales_time_left():
    stages = {"a": "pretrain", "b": "pretrain", "c": "linear_eval"}
    clock = estimate.PlanClock({"a": 600.0, "b": 600.0, "c": 300.0}, stages)
    assert clock.summary(_plan()) == \
        "plan p: estimate on this machine about 25m00s (pretrain 20m00s, linear_eval 5m00s)"
    assert "WARNING" not in clock.summary(_plan(budget=15))  # within twice the budget
    warn = clock.summary(_plan(budget=10, smaller="smoke")).splitlines()[1]
    assert "2.5x the 10 min it is sized for" in warn and "make report PLAN=smoke" in warn
    clock.finished("a", 1200.0)  # twice as slow as estimated: b by its stage's 2x, c by the overall
    # ratio pulled towards 1 by 300 s of prior work: (1200 + 300) / (600 + 300) = 5/3
    assert clock.left_text() == "; plan: about 28m20s left (2 runs)"


def test_one_slow_short_run_does_not_scale_a_plan_of_other_stages():
    """The methods-quick case: a 7 s probe estimate took 20 s; the 20-min pretrainings after it
    are not tripled, the remaining probes are."""
    est = {"random": 7.0, "p1": 600.0, "p2": 600.0, "probe": 7.0}
    stages = {"random": "linear_eval", "p1": "pretrain", "p2": "pretrain", "probe": "linear_eval"}
    clock = estimate.PlanClock(est, stages)
    clock.finished("random", 21.0)
    # probe: 7 x 3 = 21 s; pretrainings: 1200 x (21 + 300) / (7 + 300) = 1254.7 s
    assert clock.left_text() == "; plan: about 21m16s left (3 runs)"
    clock.finished("p1", 300.0)  # the pretraining stage now has its own ratio, 0.5
    assert clock.left_text() == "; plan: about 5m21s left (2 runs)"


def test_budget_must_be_a_positive_number(tmp_path):
    text = ("name: p\nbudget_min: -3\nruns:\n  - name: a\n    notebook: pretrain\n"
            "    params: {dataset: 'synthetic-cifar100:train=2,test=1'}\n")
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(plans.PlanError, match="budget_min must be a positive number"):
        plans.load_plan(tmp_path / "p.yaml", tmp_path / "out")
