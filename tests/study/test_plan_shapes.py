"""Plans of any size and shape: a 5,000-long needs chain and a 10,000-run plan are ordered and
shown; YAML aliases, oversized values, names no file system takes and matrix explosions are
refused in one short line. (How long validation takes is scripts/bench_plan.py's figure, not a
timed test.)"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from simpleclr import cli
from simpleclr.study.planfile import MAX_NAME, PlanError, load_plan

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_plan import chain_plan, sweep_plan  # noqa: E402


@pytest.fixture
def no_step_timing(monkeypatch):
    """`plan show` prices todo runs by timing a training step now: a fixed cost this test is not
    about (seconds per image of 1 ms, no warm-up)."""
    monkeypatch.setattr("simpleclr.study.estimate.Estimator.measure", lambda self, *a, **k: (1e-3, 0.0))


def _show(capsys, path: Path, outputs: Path) -> list[str]:
    assert cli.main(["plan", "show", str(path), "--outputs", str(outputs)]) == 0
    return capsys.readouterr().out.splitlines()


def test_a_5000_long_needs_chain_is_ordered_and_shown(tmp_path, capsys, no_step_timing):
    path = tmp_path / "chain.yaml"
    path.write_text(chain_plan(5000))  # listed last-first: every run must move after its need
    plan = load_plan(path, tmp_path / "out")
    assert list(plan.runs) == [f"c-{i}" for i in range(5000)]
    assert plan.closure(["c-4999"]) == list(plan.runs)
    lines = _show(capsys, path, tmp_path / "out")
    assert [ln.split()[0] for ln in lines[2:5002]] == list(plan.runs)
    assert "5000 todo" in lines[5002]


def test_a_10000_run_plan_is_validated_and_shown(tmp_path, capsys, no_step_timing):
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep_plan(10_000))
    plan = load_plan(path, tmp_path / "out")
    assert len(plan.runs) == 10_000
    assert plan.runs["probe-4999"].needs == ("pre-4999",)
    assert plan.runs["pre-7"].config.temperature == pytest.approx(0.8)
    lines = _show(capsys, path, tmp_path / "out")
    assert "10000 todo" in lines[10_002]


def test_a_long_cycle_is_one_short_line(tmp_path):
    text = chain_plan(3000).replace("  - {name: c-0, notebook: linear_eval}",
                                    "  - {name: c-0, notebook: linear_eval, needs: [c-2999]}")
    (tmp_path / "cycle.yaml").write_text(text)
    with pytest.raises(PlanError) as e:
        load_plan(tmp_path / "cycle.yaml", tmp_path / "out")
    assert "cycle" in str(e.value) and "more)" in str(e.value) and len(str(e.value)) < 400


BILLION_LAUGHS = """name: laughs
description: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]
report: {title: x}
runs:
  - {name: r, notebook: linear_eval}
x1: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
x2: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
x3: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
x4: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
x5: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
x6: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
"""


@pytest.mark.parametrize("text,words", [
    (BILLION_LAUGHS, "aliases are refused"),
    ("name: t\ndefaults: &d {all: {seed: 1}}\nruns:\n  - {name: r, notebook: linear_eval, params: *d}\n",
     "aliases are refused"),
    ("name: t\nruns:\n  - {name: r, notebook: linear_eval, params: {seed: " + "[" * 3000 + "]" * 3000 + "}}\n",
     "not valid YAML"),
    ("name: t\ndescription: [a, b]\nruns:\n  - {name: r, notebook: linear_eval}\n", "description must be text"),
    ("name: t\nstandins: 5\nruns:\n  - {name: r, notebook: linear_eval}\n", "standins must be a list"),
    ("name: t\ndefaults: {all: 5}\nruns:\n  - {name: r, notebook: linear_eval}\n", "must be a mapping"),
    ("name: t\nruns:\n  - {name: " + "r" * 300 + ", notebook: linear_eval}\n", f"at most {MAX_NAME}"),
    ("name: t\nruns:\n  - {name: Probe, notebook: linear_eval}\n  - {name: probe, notebook: linear_eval}\n",
     "only in case"),
    ("name: t\nruns:\n  - {name: nul, notebook: linear_eval}\n", "device name"),
    ("name: t\nruns:\n  - {name: r., notebook: linear_eval}\n", "must not end in '.'"),
    ("name: " + "p" * 300 + "\nruns:\n  - {name: r, notebook: linear_eval}\n", f"at most {MAX_NAME}"),
    ("name: t\nruns:\n  - {name: 'r-{a}-{b}-{c}-{d}', notebook: linear_eval, matrix: {a: " + str(list(range(40)))
     + ", b: " + str(list(range(40))) + ", c: " + str(list(range(40))) + ", d: " + str(list(range(40))) + "}}\n",
     "2,560,000 runs"),
    ("name: t\nruns:\n  - {name: r, notebook: linear_eval, params: {lr_values: " + "x" * 100_000 + "}}\n",
     "has no field"),
    ("name: t\nruns:\n  - {name: r, notebook: linear_eval, params: {encoder: " + "x" * 100_000 + "}}\n", ""),
], ids=["billion-laughs", "alias-in-params", "deep-nesting", "description-list", "standins-int", "defaults-int",
        "long-run-name", "case-clash", "windows-device", "trailing-dot", "long-plan-name", "matrix-explosion",
        "long-unknown-key", "long-value"])
def test_hostile_plan_files_are_refused_in_one_short_line(tmp_path, capsys, text, words):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    if words == "":  # a long but valid value: accepted, and never printed whole by an error
        with pytest.raises(PlanError):
            load_plan(path.with_name("missing.yaml"), tmp_path / "out")
        load_plan(path, tmp_path / "out")
        return
    with pytest.raises(PlanError) as e:
        load_plan(path, tmp_path / "out")
    assert words in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 600, str(e.value)[:2000]
    assert cli.main(["plan", "show", str(path), "--outputs", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 700 and words in err
