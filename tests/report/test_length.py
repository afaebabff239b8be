"""The length series: probes of one long SimCLR run's kept checkpoints against `super`, as a
table (intervals, paired differences), a figure and a sentence."""
from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers.studyfolders import RESULTS, STUDY_PLAN, build_study, fake_predictions  # noqa: E402
from simpleclr.report import figures as fg  # noqa: E402
from simpleclr.report import prose as rp  # noqa: E402
from simpleclr.report import stats, tables  # noqa: E402

LENGTH = STUDY_PLAN + textwrap.indent(textwrap.dedent("""
    - name: long-pre
      notebook: pretrain
      params: {epochs: 4}
    - name: long-e{e}
      matrix: {e: [1, 2, 4]}
      notebook: linear_eval
      params: {encoder: "{runs.long-pre}", seed: "{e}"}
      report: {length: "{e}"}
    """), "  ")
POINTS = {"long-e1": (30.0, 60.0), "long-e2": (38.0, 66.0), "long-e4": (46.0, 72.0)}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return rp.load_study(build_study(tmp_path_factory.mktemp("length"), LENGTH, POINTS).outputs)


def test_the_length_table_orders_the_points_and_pairs_each_with_super(study):
    df = rp.length_table(study)
    assert list(df["epochs"]) == [1.0, 2.0, 4.0] and list(df["top1"]) == [30.0, 38.0, 46.0]
    sup = fake_predictions(*RESULTS["super"]).correct()
    for (name, acc), text in zip(POINTS.items(), df["vs_text"]):
        assert text == stats.paired(fake_predictions(*acc).correct(), sup).text(), name
    assert (df["super_top1"] == RESULTS["super"][0]).all()
    shown = rp.length_display(df)
    assert list(shown["SimCLR epochs"]) == ["1", "2", "4"]
    assert shown["Top-1 vs super (points) [95%], p"].iloc[0].endswith(": lower")
    text = rp.length_text(df)
    assert text.startswith("SimCLR's probe after 1 epochs: 30.0%")
    assert "Training 4× longer moved the probe by +16.0 points; at the longest point SimCLR is still below" in text


def test_a_kept_checkpoints_own_epoch_overrides_the_plans_number(study):
    run = study.runs["long-e1"]
    run.result = {**run.result, "encoder_meta": {"epoch": 100}}
    assert tables.length_epochs(run) == 100.0
    run.result = {k: v for k, v in run.result.items() if k != "encoder_meta"}
    assert tables.length_epochs(run) == 1.0


def test_the_gap_figure_draws_the_curve_its_intervals_and_super(study):
    df = rp.length_table(study)
    fig = fg.plot_length_gap(df)
    ax = fig.axes[0]
    assert ax.get_title() == "Gap against length" and ax.get_xscale() == "log"
    line = ax.lines[0]
    assert list(line.get_xdata()) == [1.0, 2.0, 4.0] and list(line.get_ydata()) == [30.0, 38.0, 46.0]
    assert any(np.allclose(h.get_ydata(), RESULTS["super"][0]) for h in ax.lines[1:])
    assert [t.get_text() for t in ax.texts] == ["-20.0", "-12.0", "-4.0"]
    matplotlib.pyplot.close(fig)
    assert fg.plot_length_gap(df.iloc[0:0]) is None
