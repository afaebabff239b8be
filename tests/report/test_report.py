"""Report tables and figures on hand-made run folders (no training): values against numpy."""
from __future__ import annotations

import copy
import math
import re
import textwrap

import matplotlib

matplotlib.use("Agg")

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from simpleclr.report import figures as fg
from simpleclr.report import prose as rp
from simpleclr.report import stats
from simpleclr.runs.rundir import RunDir
from simpleclr.report.model import RunInfo, Study, load_study

from helpers.studyfolders import FAILED, RESULTS, STUDY_PLAN, build_study, fake_predictions
from simpleclr.report import tables
from simpleclr.runs import predictions


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    plan = build_study(tmp_path_factory.mktemp("report"))
    return rp.load_study(plan.outputs)


def test_main_table_means_stds_and_differences_to_super(study):
    df = rp.main_table(study)
    # rows in the issue's order, only those the plan has
    assert list(df.index) == ["selfsuper-transfer", "selfsuper", "imagenet-super", "super", "super-probe",
                              "random"]
    t1 = np.array([RESULTS["ss-s0"][0], RESULTS["ss-s1"][0]])
    assert df.loc["selfsuper", "top1"] == pytest.approx(t1.mean())
    assert df.loc["selfsuper", "top1_std"] == pytest.approx(t1.std(ddof=1))
    assert df.loc["selfsuper", "n"] == 2
    assert df.loc["selfsuper", "d_top1"] == pytest.approx(t1.mean() - RESULTS["super"][0])
    assert df.loc["random", "d_top5"] == pytest.approx(RESULTS["random"][1] - RESULTS["super"][1])
    assert math.isnan(df.loc["super", "top1_std"])  # one seed: no spread claimed
    assert df.loc["super", "d_top1"] == 0
    assert df.loc["selfsuper", "budget"] == ("SimCLR, 2 epochs × 512, synthetic-cifar100 (stand-in); "
                                             "probe on 100% of the labels")
    # a result that records its images gives the encoder passes (two views each for SimCLR)
    assert df.loc["selfsuper-transfer", "budget"].startswith("SimCLR, 10 steps × 512")
    assert "10,240 encoder passes" in df.loc["selfsuper-transfer", "budget"]
    assert df.loc["super", "budget"] == "supervised, 2 epochs × 256, synthetic-cifar100 (stand-in)"
    assert df.loc["random", "budget"] == "no training; probe on 100% of the labels"
    assert df.loc["super", "input_size"] == "32" and df.loc["selfsuper", "input_size"] == "32"


def test_every_accuracy_has_its_95_interval_and_overlaps_are_called_noise(study):
    df = rp.main_table(study)
    # one seed: Wilson over the 200 test images; two seeds: over seeds and test images together,
    # from both seeds' per-image predictions
    sup = stats.wilson(RESULTS["super"][0], 200)
    assert (df.loc["super", "top1_lo"], df.loc["super", "top1_hi"]) == pytest.approx((sup.low, sup.high))
    two = stats.seeds_and_images(np.stack([fake_predictions(*RESULTS[n]).correct() for n in ("ss-s0", "ss-s1")]))
    assert (df.loc["selfsuper", "top1_lo"], df.loc["selfsuper", "top1_hi"]) == pytest.approx((two.low, two.high))
    shown = rp.main_table_display(df).set_index(df.index)
    assert shown.loc["super", "Top-1 (%)"] == f"50.0 [{sup.low:.1f}, {sup.high:.1f}]"
    assert shown.loc["selfsuper", "Top-1 (%)"].startswith("42.0 ± 2.8 [")
    # 42 ± 25 over two seeds overlaps super's [43.1, 56.9]: a -8 point gap is no ranking
    assert shown.loc["selfsuper", "Δ top-1 vs super"] == "-8.0 (within noise)"
    assert not shown.loc["random", "Δ top-1 vs super"].endswith("(within noise)")  # 5 vs 50


def test_the_verdict_follows_the_intervals_never_ranking_inside_the_noise():
    """13.3% for super-transfer, one point above a random encoder's 12.3% on 10,000 test images, is
    not called the best: the headline says what the intervals show."""
    def rows(values):
        df = pd.DataFrame({n: {"top1": v, "top1_std": math.nan,
                               "top1_lo": stats.wilson(v, 10000).low,
                               "top1_hi": stats.wilson(v, 10000).high} for n, v in values.items()}).T
        df["d_top1"] = df["top1"] - df.loc["super", "top1"]
        return df

    text = rp.verdict(rows({"random": 12.3, "selfsuper": 10.4, "super-transfer": 13.3, "super": 7.1}))
    assert "random does not differ from it (by the 95% intervals; no per-image predictions" in text
    assert ". No trained representation is above the random-encoder floor beyond the noise" in text
    text = rp.verdict(rows({"random": 12.3, "selfsuper": 16.2, "super": 15.8}))
    assert "<b>selfsuper</b>" in text and "super does not differ from it" in text
    assert ". Above the random-encoder floor (points; by the 95% intervals; " in text
    assert ": selfsuper (+3.9), super (+3.5)" in text
    assert "selfsuper (+0.4; no difference resolved)" in text and text.endswith(".") and ".." not in text
    assert ". Against supervised training from scratch (super, 15.8%" in text
    text = rp.verdict(rows({"random": 12.3, "selfsuper": 20.0, "super": 15.8}))
    assert "selfsuper (+4.2; above it)" in text and "does not differ" not in text


def test_tables_show_each_rows_labelled_images(study):
    df = rp.main_table(study)
    assert df.loc["selfsuper", "n_labelled"] == df.loc["super", "n_labelled"] == "200"
    assert df.loc["imagenet-super", "n_labelled"] == "—"  # failed: nothing recorded
    shown = rp.main_table_display(df)
    assert list(shown["Labelled images"]) == ["200", "200", "—", "200", "200", "200"]
    ft = rp.finetune_display(rp.finetune_table(study))
    assert list(ft["Labelled images"]) == ["200"]
    cells = rp.label_display(rp.label_table(study)).set_index("Representation")
    iv = stats.wilson(RESULTS["super-labels"][0], 200)  # with its 95% interval
    assert cells.loc["super", "10% labels"] == f"{iv.text()} (20 images)"
    assert cells.loc["selfsuper", "100% labels"] == "42.0 ± 2.8 [15.7, 68.3] (200 images)"  # 2 seeds x 200 images
    unrecorded = rp.label_table(study).assign(n_labelled="—")  # folders from before the record
    assert rp.label_display(unrecorded).set_index("Representation").loc["super", "10% labels"] == iv.text()


def test_fine_tuning_shows_the_rate_chosen_on_validation(study):
    ft = rp.finetune_table(study)
    assert ft.loc["selfsuper", "encoder_lr"] == "0.1 (best validation top-1 of 0.1: 30.0, 1: 25.0; 1-epoch trials)"
    assert list(rp.finetune_display(ft)["Encoder lr scale"]) == [ft.loc["selfsuper", "encoder_lr"]]
    untuned = copy.deepcopy(study)
    run = untuned.runs["ft-ss"]
    run.result = {k: v for k, v in run.result.items() if not k.startswith("encoder_lr")}
    run.config_json["config"].update(encoder_lr_grid=[], encoder_lr_scale=1.0)
    assert rp.finetune_table(untuned).loc["selfsuper", "encoder_lr"] == "1 (not tuned)"
    assert "Not tuned in this plan: the encoder's learning rate is the head's times 1" in rp.protocol(untuned)


def test_the_budget_says_whether_the_rows_had_equal_compute(study):
    # tr-pre records 10 steps x 512 images, two views each; the others record no images here
    text = rp.protocol(study)
    assert re.search(r"selfsuper-transfer: SimCLR on [^;]*, 10 steps, batch 512, 10,240 encoder passes;", text)
    assert "qual compute" not in text  # one row with passes: nothing to compare
    same = copy.deepcopy(study)
    same.runs["super"].result["images_seen"] = 10_240  # a supervised image is one pass
    assert ("Equal compute: selfsuper-transfer, super each passed 10,240 images through the encoder"
            in rp.protocol(same))
    other = copy.deepcopy(study)
    other.runs["super"].result["images_seen"] = 5_000
    assert ("Unequal compute: the rows passed different numbers of images through the encoder (a SimCLR "
            "image's two views count twice); against super's 5,000: selfsuper-transfer 2.0×.") in rp.protocol(other)


def test_unequal_label_budgets_are_flagged(study):
    assert rp.budget_mismatches(study) == []
    bad = copy.deepcopy(study)
    bad.runs["super"].result.update(n_labelled=180, n_train=180)  # fewer labels drawn
    text = rp.budget_mismatches(bad)
    assert len(text) == 1 and "At 100% of the synthetic-cifar100 (stand-in) labels" in text[0]
    assert "super trained on 180 of 180" in text[0] and "ss-s0 trained on 200 of 200" in text[0]
    assert text[0] in rp.warnings(bad)
    # the same draw, but a supervised run that held its validation share out beside probes that refit
    held = copy.deepcopy(study)
    held.runs["super"].result.update(n_train=180)
    text = rp.budget_mismatches(held)
    assert len(text) == 1 and "super trained on 180 of 200" in text[0]


def test_protocol_states_the_label_rule_the_tuning_and_the_caveats(study):
    text = rp.protocol(study)
    assert "takes the same images" in text and "rounded half up" in text
    assert ("supervised training (`super`, its label curve) holds 10% out, evaluated every epoch (never test), "
            "and trains on the rest") in text
    assert "fine-tuning holds 10% out to choose its encoder learning rate (below), then trains on all" in text
    assert "chosen from 0.1, 1 by validation top-1 after one trial of 1 epochs" in text
    assert "batch-norm running statistics of initialisation" in text
    assert "Appendix B.8" not in text  # the plan keeps the default 45-value grid
    assert "grid: 45 values from 1e-06 to 100000" in text
    # how the probes validated, read from their configs: the default folds, or one held-out split
    assert "weight decay chosen on validation by 5-fold cross-validation over the labelled images" in text
    assert "its weight decay by 5-fold cross-validation over the labelled images (class-balanced folds" in text
    one_split = copy.deepcopy(study)
    for r in one_split.runs.values():
        if r.stage == "linear_eval" and r.config:
            r.config["val_folds"] = 1
    single = rp.protocol(one_split)
    assert "chosen on validation on a split carved from the labelled images" in single
    assert "its weight decay on a held-out 10% of them" in single and "cross-validation" not in single
    assert "224 px" not in text  # the ImageNet row failed: no input size to speak of
    done = copy.deepcopy(study)
    done.runs["imagenet"].result = {"fingerprint": done.runs["imagenet"].fingerprint, "input_size": 128}
    text = rp.protocol(done)
    assert ("The ImageNet rows read CIFAR-100 upsampled from its stored size to 128 px, below the 224 px of "
            "SimCLR's transfer protocol; this plan did not probe them at 224 px; behind the ImageNet stem's 4× "
            "downsampling that leaves a 32×32 grid.") in text
    # every other row read 32 px: the ImageNet row's larger input is named, not called equivalent
    assert ("The other rows read the images at 32 px: the ImageNet rows get 16× the pixels per image, "
            "upsampled, so more compute per image but no detail beyond the stored image's.") in text
    same = copy.deepcopy(done)
    same.runs["imagenet"].result["input_size"] = 32
    assert "The other rows read" not in rp.protocol(same)
    assert "width" not in rp.protocol(same)
    assert "ResNet-18 encoder (torchvision's, 512-d output; the CIFAR stem" in rp.protocol(same)
    narrow = copy.deepcopy(done)
    narrow.runs["super"].config["width"] = 16
    text = rp.protocol(narrow)
    assert "Encoders of width 16 (first-stage channels, doubled at each stage; 0.0625 of the multiply-adds)" in text
    # the rows at each width are named, so the reader sees which comparisons are like for like
    assert "The main table mixes widths (width 16: super; width 64: " in text
    assert "(torchvision's layout at width 16/64, 128-d/512-d output: the caveats name each row's width;" in text
    assert "Every row of the main table" not in text
    for r in narrow.runs.values():
        if r.config:
            r.config["width"] = 32
    text = rp.protocol(narrow)
    assert "Encoders of width 32 (first-stage channels, doubled at each stage; 0.25 of the" in text
    assert "Every row of the main table, the random floor included, has that width." in text
    assert "mixes widths" not in text


def test_missing_row_carries_its_reason(study):
    df = rp.main_table(study)
    assert math.isnan(df.loc["imagenet-super", "top1"])
    assert FAILED["imagenet"] in df.loc["imagenet-super", "missing"]
    shown = rp.main_table_display(df)
    row = shown[shown["Representation"].str.startswith("imagenet-super")].iloc[0]
    assert row["Top-1 (%)"] == "—" and "WeightsError" in row["Missing"]
    html = rp.style_main_table(df).to_html()
    assert "42.0 ± 2.8" in html and "-8.0" in html and "(baseline)" in html


def test_a_long_missing_reason_is_written_out_once_and_cited_elsewhere(study):
    """A reason with a URL and paths (the ImageNet weights' advice) is given whole once, in the
    headline's notes; the main table and the provenance table give its head and the note's number."""
    long = copy.deepcopy(study)
    reason = ("WeightsError: ImageNet weights resnet18-f37072fd.pth are not in /x/hub/checkpoints: download "
              "https://download.pytorch.org/models/resnet18-f37072fd.pth and put it in /x/hub/checkpoints")
    long.runs["imagenet"].reason = reason
    assert long.missing_notes() == [(reason, ["imagenet"])]
    cell = rp.main_table(long).loc["imagenet-super", "missing"]
    assert cell.startswith("imagenet: WeightsError: ImageNet weights") and "(missing-run note 1, at the top)" in cell
    assert reason not in cell
    prov = rp.provenance_table(long).set_index("run").loc["imagenet", "missing"]
    assert prov.endswith("(missing-run note 1, at the top)") and reason not in prov
    head = rp.headline(long, "t")
    assert head.count("download.pytorch.org") == 1 and "Missing-run note 1 (imagenet): WeightsError" in head
    # a short reason stays in its cells and gets no note
    assert study.missing_notes() == [] and FAILED["imagenet"] in rp.main_table(study).loc["imagenet-super", "missing"]


def test_finetune_gain_is_finetuned_minus_super(study):
    ft = rp.finetune_table(study)
    assert list(ft.index) == ["selfsuper"]
    assert ft.loc["selfsuper", "gain_top1"] == pytest.approx(RESULTS["ft-ss"][0] - RESULTS["super"][0])
    assert ft.loc["selfsuper", "probe_top1"] == pytest.approx(np.mean([RESULTS["ss-s0"][0], RESULTS["ss-s1"][0]]))


def test_label_table_adds_the_full_label_point_from_the_main_rows(study):
    le = rp.label_table(study)
    got = {(r.row, r.fraction): r.top1 for r in le.itertuples()}
    assert got == {("selfsuper", 0.1): RESULTS["ss-labels"][0],
                   ("selfsuper", 1.0): pytest.approx(42.0),
                   ("super", 0.1): RESULTS["super-labels"][0], ("super", 1.0): RESULTS["super"][0]}
    wide = rp.label_display(le)
    assert list(wide.columns) == ["Representation", "10% labels", "100% labels"]


def test_size_table_reads_fractions_and_image_counts_from_the_pretraining_runs(study):
    sz = rp.size_table(study)
    assert list(sz["fraction"]) == [0.25, 1.0]
    assert list(sz["n_images"]) == [250, 1000]
    assert list(sz["top1"]) == [RESULTS["size"][0], RESULTS["transfer"][0]]
    assert list(sz["steps"]) == [10, 10]


def test_a_size_run_on_another_pretraining_set_gets_its_own_row_and_line(tmp_path):
    """Domain against size: a run on another set with as many images as a subset is its own cell,
    never merged with the study set's cell of the same share."""
    other = STUDY_PLAN + textwrap.indent(textwrap.dedent("""
        - name: dom-pre
          notebook: pretrain
          params: {dataset: "synthetic-cifar100:train=1,test=2", steps: 10}
        - name: dom
          notebook: linear_eval
          params: {encoder: "{runs.dom-pre}"}
          report: {size_study: true}
        """), "  ")
    build_study(tmp_path, other, results={"dom": (25.0, 55.0)})
    sz = rp.size_table(load_study(tmp_path / "outputs" / "study"))
    assert list(zip(sz["dataset"], sz["pct"], sz["top1"])) == [
        ("synthetic-cifar100:train=2,test=2", 25.0, RESULTS["size"][0]),
        ("synthetic-cifar100:train=2,test=2", 100.0, RESULTS["transfer"][0]),
        ("synthetic-cifar100:train=1,test=2", 100.0, 25.0)]
    assert rp.size_axes(sz) == ["dataset", "pct"]
    assert list(rp.size_display(sz)["Pretraining set"]) == list(sz["dataset"])
    # the cell is chosen on training labels (the 25% cell's cross-validated 33.0%), not on test,
    # where the 100% cell scores higher
    assert rp.study_spread(sz, rp.size_axes(sz)).startswith(
        "Chosen cell (best cross-validated probe accuracy on training labels, 33.0%): on "
        "synthetic-cifar100:train=2,test=2, 25% of the pretraining images, test top-1 20.0")
    fig = fg.plot_size_curve(sz)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "SimCLR on synthetic-cifar100:train=2,test=2 (probe top-1)",
        "SimCLR on synthetic-cifar100:train=1,test=2 (probe top-1)"]


def test_hparam_table_groups_probes_by_their_pretraining_values(study):
    hp = rp.hparam_table(study)
    cells = {(r.temperature, r.batch_size): (r.top1, r.n) for r in hp.itertuples()}
    assert cells == {(0.2, 512): (RESULTS["hp"][0], 1), (0.5, 512): (pytest.approx(42.0), 2)}


def test_hparam_axes_are_the_pretraining_fields_only(study):
    """The display's columns and the heatmap's panels come from the axes: an interval bound or
    the test-set size taken for an axis would split the heatmap into one panel per seed mean."""
    hp = rp.hparam_table(study)
    assert fg.hparam_axes(hp) == ["temperature", "batch_size"]
    shown = rp.hparam_display(hp).columns.tolist()
    assert shown[:3] == ["temperature", "batch size", "Probe top-1 (%)"]
    fig = fg.plot_hparam_heatmap(hp)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["SimCLR hyperparameters"]


def test_tsne_uses_one_fixed_subset_for_every_panel_and_caches(study):
    panels = fg.tsne_panels(study, n_points=60, seed=0, perplexity=10)
    assert [p["row"] for p in panels] == ["selfsuper-transfer", "selfsuper", "super", "random"]
    for p in panels:
        assert p["xy"].shape == (60, 2) and np.isfinite(p["xy"]).all()
        np.testing.assert_array_equal(p["labels"], panels[0]["labels"])
    # class-balanced: 60 points over 20 superclasses -> 3 each
    assert np.bincount(panels[0]["labels"], minlength=20).tolist() == [3] * 20
    cached = sorted((study.plan_dir / ".cache").glob("tsne-*.npy"))
    assert len(cached) == 4
    again = fg.tsne_panels(study, n_points=60, seed=0, perplexity=10)
    for a, b in zip(panels, again):
        np.testing.assert_array_equal(a["xy"], b["xy"])


def test_stratified_points_is_balanced_and_deterministic():
    labels = np.repeat(np.arange(5), [10, 20, 30, 40, 50])
    a = fg.stratified_points(labels, 25, seed=3)
    assert np.bincount(labels[a]).tolist() == [5, 5, 5, 5, 5]
    np.testing.assert_array_equal(a, fg.stratified_points(labels, 25, seed=3))
    assert (np.diff(a) > 0).all()
    assert len(fg.stratified_points(labels, 1000, seed=0)) == len(labels)


def test_figures_have_labelled_axes(study):
    figs = [fg.plot_finetune(rp.finetune_table(study)),
            fg.plot_label_efficiency(rp.label_table(study)),
            fg.plot_size_curve(rp.size_table(study), floor=5.0, ceiling=50.0),
            fg.plot_hparam_heatmap(rp.hparam_table(study)),
            fg.plot_training_curves(fg.curve_runs(study)),
            fg.plot_tsne(fg.tsne_panels(study, n_points=40, seed=1, perplexity=5))]
    for fig in figs:
        for ax in fig.axes:
            if ax.get_label() == "<colorbar>" or not ax.get_visible() or not ax.has_data():
                continue
            assert ax.get_xlabel() and ax.get_ylabel(), (fig, ax.get_title())
    curves = fg.curve_runs(study)
    assert [label for label, _ in curves] == ["selfsuper-transfer", "selfsuper", "super"]
    tag = fg.figure_html(figs[2])
    assert tag.startswith('<img src="data:image/png;base64,iVBOR')  # a PNG, inline
    assert 'alt="Pretraining-set size (same number of optimisation steps): CIFAR-100 linear-probe top-1' in tag


def _run_info(path, notebook: str, role: dict, config: dict | None = None) -> RunInfo:
    return RunInfo(name=path.name, notebook=notebook, stage=notebook, path=path, role=role, state="done",
                   reason=None, fingerprint=None, config_json={"config": config or {}})


def test_training_curves_draw_the_step_trace_and_per_epoch_metrics_without_one(tmp_path):
    """A half-epoch SimCLR run (one metrics row) draws its step trace; a supervised run folder
    from before the trace draws its epochs as it always did."""
    pre, sup = RunDir(tmp_path / "pre"), RunDir(tmp_path / "sup")
    pre.log_metrics({"epoch": 1, "step": 200, "loss": 5.0, "knn_top1": 12.0})
    trace = [{"step": s, "epoch": s / 400, "loss": 6.0 - s / 100, "lr": 0.1} for s in range(1, 201)]
    pre.log_steps(trace)
    for e in (1, 2):
        sup.log_metrics({"epoch": e, "step": 5 * e, "loss": 4.0 - e, "val_top1": 5.0 * e})
    runs = {"pre": _run_info(pre.path, "pretrain", {}),
            "probe": _run_info(tmp_path / "probe", "linear_eval", {"row": "selfsuper"},
                               {"encoder": str(pre.path)}),
            "sup": _run_info(sup.path, "supervised", {"row": "super"})}
    study = Study(plan_dir=tmp_path, manifest={}, runs=runs)
    assert runs["pre"].steps() == trace and runs["sup"].steps() == []
    curves = fg.curve_runs(study)
    assert [(label, run.name) for label, run in curves] == [("selfsuper", "pre"), ("super", "sup")]
    fig = fg.plot_training_curves(curves)
    simclr, supervised, accuracy = fig.axes
    (line,) = simclr.get_lines()
    assert list(line.get_xdata()) == [t["epoch"] for t in trace]
    assert list(line.get_ydata()) == [t["loss"] for t in trace]
    assert simclr.get_xlabel() == "epoch"
    (line,) = supervised.get_lines()
    assert list(line.get_xdata()) == [1, 2] and list(line.get_ydata()) == [3.0, 2.0]
    assert line.get_marker() == "."
    assert [list(a.get_xdata()) for a in accuracy.get_lines()] == [[1], [1, 2]]  # per epoch, both
    # without its trace the one-epoch run is no curve, as in a format 1 folder
    pre.steps_path.unlink()
    assert [label for label, _ in fg.curve_runs(study)] == ["super"]


def test_warnings_flag_generated_data_standins_and_gaps(study):
    text = " ".join(rp.warnings(study))
    assert "generated stand-in data" in text
    assert "1 of" in text and "missing" in text
    assert "stand-in" not in rp.headline(study).split("generated stand-in data")[0]  # no stand-in weights here


def test_provenance_lists_every_run_with_state_and_commit(study):
    prov = rp.provenance_table(study)
    assert list(prov["run"]) == list(study.runs)
    assert set(prov.loc[prov["run"] == "imagenet", "state"]) == {"failed"}
    done = prov[prov["state"] == "done"]
    assert (done["git commit"] != "—").all() and (done["wall time"] != "—").all()
    enc = dict(zip(prov["run"], prov["encoder"]))
    assert enc["ss-s1"] == "run ss-pre-s1" and enc["ft-ss"] == "run ss-pre-s0"
    assert enc["random"] == "random" and enc["super"] == "—"
    assert enc["imagenet"] == "torchvision ImageNet weights"
    assert not done["git commit"].str.contains("finished under").any()  # one session each here
    # a run started under one commit and finished under another names both
    assert (rp.commit_text({"git_commit": "1111111111aaXX"}, {"git_commit": "2222222222bb+dirty"})
            == "1111111111aa, finished under 2222222222bb (uncommitted changes)")
    assert rp.commit_text({"git_commit": "1111111111aa"}, {"git_commit": "1111111111aa"}) == "1111111111aa"


def test_versions_a_run_did_not_record_show_as_not_recorded(tmp_path):
    """Provenance is what the runs wrote down: never this machine's libraries in their place."""
    import torch

    from simpleclr.report.model import RunInfo, Study

    def run(name, provenance):
        return RunInfo(name=name, notebook="linear_eval", stage="linear_eval", path=tmp_path / name,
                       role={}, state="done", reason=None, fingerprint="f",
                       config_json={"provenance": provenance} if provenance is not None else None)

    bare = Study(tmp_path, {"plan": "p", "source": "p.yaml"}, {"a": run("a", None), "b": run("b", {})})
    assert rp.versions(bare) == {}
    text = rp.provenance_summary(bare)
    assert "versions: not recorded." in text and "git commit <code>not recorded</code>" in text
    assert torch.__version__ not in text
    recorded = Study(tmp_path, {"plan": "p", "git_commit": "abc"},
                     {"a": run("a", None), "b": run("b", {"versions": {"torch": "1.0", "numpy": None}})})
    assert rp.versions(recorded) == {"torch": "1.0", "numpy": None}
    text = rp.provenance_summary(recorded)
    assert "versions: torch 1.0, numpy not recorded." in text and "<code>abc</code>" in text


def test_load_study_without_a_manifest_says_what_to_run(tmp_path):
    with pytest.raises(rp.ReportError, match="run the plan first"):
        rp.load_study(tmp_path / "nothing")


def test_export_html_is_self_contained_without_code(tmp_path):
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    cell = new_code_cell("secret_code_marker = 1", execution_count=1)
    tag = f'<img src="data:image/png;base64,{png}" alt="A figure: y against x"/>'
    cell.outputs = [new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"}),
                    new_output("display_data", data={"text/html": tag, "text/plain": "<HTML>"}),
                    new_output("display_data", data={"text/html": "<table><tr><td>cell</td></tr></table>"})]
    nb = new_notebook(cells=[cell])
    nbformat.write(nb, str(tmp_path / "r.ipynb"))
    out = fg.export_html(tmp_path / "r.ipynb", tmp_path / "out" / "report.html")
    text = out.read_text()
    assert f"data:image/png;base64,{png}" in text
    assert f'<img src="data:image/png;base64,{png}" alt="A figure: y against x"' in text
    assert "secret_code_marker" not in text
    assert "<script src=" not in text and "cdnjs" not in text  # nothing fetched from the web
    assert "<td>cell</td>" in text
    assert re.search(r"<title>\s*Notebook\s*</title>", text)  # no title given: nbconvert's default
    titled = fg.export_html(tmp_path / "r.ipynb", tmp_path / "out" / "t.html", title="SimCLR & co — quick")
    assert re.search(r"<title>\s*SimCLR &amp; co — quick\s*</title>", titled.read_text())


def test_plots_of_sections_without_numbers_return_none(study):
    empty = rp.size_table(study).assign(top1=float("nan"))
    assert fg.plot_size_curve(empty) is None
    assert fg.plot_hparam_heatmap(rp.hparam_table(study).assign(top1=float("nan"))) is None
    assert fg.plot_finetune(rp.finetune_table(study).assign(gain_top1=float("nan"))) is None
    assert fg.plot_label_efficiency(rp.label_table(study).iloc[0:0]) is None


def test_stand_in_weights_are_read_from_the_record_never_the_file_name(tmp_path):
    from simpleclr.report.model import RunInfo, Study

    def run(name: str, stage: str, spec: str, result: dict) -> RunInfo:
        key = "encoder" if stage == "linear_eval" else "init"
        return RunInfo(name=name, notebook=stage, stage=stage, path=tmp_path / name, role={},
                       state="done", reason=None, fingerprint="f", config_json={"config": {key: spec}},
                       result={"fingerprint": "f", **result})

    runs = {  # a real ImageNet file that happens to be named like a stand-in, a fine-tuning from a
        # stand-in under a plain name, and a probe written before encoder_standin was recorded
        "named": run("named", "linear_eval", "imagenet:/w/standin-imagenet-resnet18.pth",
                     {"encoder_source": "imagenet", "encoder_standin": False}),
        "ft": run("ft", "supervised", "imagenet:/w/resnet18.pth", {"encoder_standin": True}),
        "old": run("old", "linear_eval", "imagenet:/w/resnet18.pth", {"encoder_source": "standin"}),
    }
    study = Study(plan_dir=tmp_path, manifest={}, runs=runs)
    assert [r.name for r in rp.standin_runs(study)] == ["ft", "old"]
    assert rp.encoder_label(study, runs["named"]) == "torchvision ImageNet weights (standin-imagenet-resnet18.pth)"
    assert rp.encoder_label(study, runs["ft"]) == "stand-in weights (not ImageNet)"
    assert rp.encoder_label(study, runs["old"]) == "stand-in weights (not ImageNet)"


def test_a_study_says_from_its_intervals_whether_its_cells_differ():
    # The cell is chosen by cross-validated accuracy on training labels; intervals that overlap
    # are no difference; apart, the chosen cell is named above the lowest.
    close = pd.DataFrame([{"temperature": 0.2, "top1": 15.1, "top1_lo": 14.4, "top1_hi": 15.8, "cv_top1": 16.0},
                          {"temperature": 0.5, "top1": 15.6, "top1_lo": 14.9, "top1_hi": 16.4, "cv_top1": 17.0}])
    text = rp.study_spread(close, ["temperature"])
    assert text.startswith("Chosen cell (best cross-validated probe accuracy on training labels, 17.0%): "
                           "temperature 0.5, test top-1 15.6 [14.9, 16.4]%; lowest temperature 0.2: 15.1")
    assert "overlap, so at this budget the study shows no difference" in text
    apart = close.assign(top1=[12.0, 15.6], top1_lo=[11.4, 14.9], top1_hi=[12.7, 16.4])
    assert rp.study_spread(apart, ["temperature"]).endswith("above the lowest beyond their 95% intervals.")
    # no choice on test: without the training-label accuracy no cell is chosen
    assert "does not rank its cells by test accuracy" in rp.study_spread(close.drop(columns="cv_top1"),
                                                                          ["temperature"])
    sizes = pd.DataFrame([{"pct": 10.0, "top1": 14.0, "top1_lo": 13.3, "top1_hi": 14.7, "cv_top1": 13.0},
                          {"pct": 100.0, "top1": 15.0, "top1_lo": float("nan"), "top1_hi": float("nan"),
                           "cv_top1": 14.0}])
    assert "nothing to compare" in rp.study_spread(sizes, ["pct"])  # one cell has no interval
    assert "100% of the pretraining images, test top-1 15.0" in rp.study_spread(
        sizes.assign(top1_lo=[13.3, 14.3], top1_hi=[14.7, 15.7]), ["pct"])


# ---- paired comparisons in the report -------------------------------------------------------------
def test_main_table_pairs_each_row_with_the_floor_and_falls_back_where_predictions_are_missing(study):
    df = rp.main_table(study)
    # super (one run) against random (one run): McNemar on the same 200 images
    ref = stats.paired(fake_predictions(*RESULTS["super"]).correct(), fake_predictions(*RESULTS["random"]).correct())
    assert df.loc["super", "vr_paired"] and df.loc["super", "vr_text"] == ref.text()
    assert df.loc["super", "vr_verdict"] == ref.verdict == "higher"
    assert ref.diff == pytest.approx(RESULTS["super"][0] - RESULTS["random"][0])
    # selfsuper (two seeds) against random (one run, a trained encoder's seed noise borrowed):
    # every seed's per-image predictions
    both = np.stack([fake_predictions(*RESULTS[f"ss-s{s}"]).correct() for s in (0, 1)])
    ref_ss = stats.paired_seeds(both, fake_predictions(*RESULTS["random"]).correct()[None])
    assert df.loc["selfsuper", "vr_text"] == ref_ss.text() and "2 vs 1 seeds" in ref_ss.basis
    # the transfer row's folder predates predictions: the interval rule, and the cell says so
    assert not df.loc["selfsuper-transfer", "vr_paired"]
    assert df.loc["selfsuper-transfer", "vr_text"] == "+25.0 (intervals apart; no per-image predictions)"
    shown = rp.main_table_display(df).set_index(df.index)
    col = "Top-1 vs random (points) [95%], p"
    assert shown.loc["super", col] == f"{ref.text()}: higher"
    assert shown.loc["random", col] == "(the floor)" and shown.loc["imagenet-super", col] == "—"
    assert shown.loc["selfsuper-transfer", col].endswith("no per-image predictions): higher")


def test_super_probe_is_the_like_for_like_row_beside_super(study):
    df = rp.main_table(study)
    rows = list(df.index)
    assert rows.index("super-probe") == rows.index("super") + 1
    assert df.loc["super-probe", "evaluation"].startswith("linear probe")
    assert df.loc["super", "evaluation"] == "tested directly"
    assert df.loc["super-probe", "top1"] == RESULTS["super-probe"][0]
    ref = stats.paired(fake_predictions(*RESULTS["super-probe"]).correct(),
                       fake_predictions(*RESULTS["super"]).correct())
    assert df.loc["super-probe", "vs_text"] == ref.text() and df.loc["super-probe", "vs_verdict"] == ref.verdict


def test_a_rehearsals_report_says_so_before_any_number(study):
    cut = copy.deepcopy(study)
    for run in cut.runs.values():
        if run.config_json:
            run.config_json["config"]["rehearsal"] = 32
    head = rp.headline(cut)
    assert "<h1>REHEARSAL, not results: " in head and "no number in it is a result" in head
    assert "Highest CIFAR-100 top-1" not in head and "every accuracy below is noise" in head
    assert "REHEARSAL" not in rp.headline(study) and "Highest CIFAR-100 top-1" in rp.headline(study)


def test_the_headline_names_the_paired_test_and_each_rows_gain_over_super(study):
    text = rp.verdict(rp.main_table(study).dropna(subset=["top1"]))
    ref = stats.paired(fake_predictions(*RESULTS["super"]).correct(), fake_predictions(*RESULTS["random"]).correct())
    assert f"super ({ref.text()})" in text
    assert "paired test where the rows have per-image predictions, else 95% intervals" in text
    gain = stats.paired(fake_predictions(*RESULTS["super-probe"]).correct(),
                        fake_predictions(*RESULTS["super"]).correct())
    word = {"higher": "above it", "lower": "below it", "same": "no difference resolved"}[gain.verdict]
    assert f"super-probe ({gain.text()}; {word})" in text


def _run(tmp_path, name, preds, seed=0):
    path = tmp_path / name
    record = predictions.save_predictions(path / predictions.PREDICTIONS, preds)
    return RunInfo(name=name, notebook="linear_eval", stage="linear_eval", path=path, role={}, state="done",
                   reason=None, fingerprint="f", result={"fingerprint": "f", **record}, planned={"seed": seed})


def test_rows_are_paired_only_on_the_same_test_images(tmp_path):
    a = _run(tmp_path, "a", fake_predictions(60.0, 80.0))
    b = _run(tmp_path, "b", fake_predictions(50.0, 70.0))
    assert tables.paired_runs([a], [b]) == stats.paired(fake_predictions(60.0, 80.0).correct(),
                                                        fake_predictions(50.0, 70.0).correct())
    other = fake_predictions(50.0, 70.0)
    shuffled = predictions.Predictions(other.top1[::-1].copy(), other.top5_hit[::-1].copy(), other.labels[::-1].copy())
    c = _run(tmp_path, "c", shuffled)  # other test images (here: another order): no pairing
    assert tables.paired_runs([a], [c]) is None
    row = {"top1": 60.0, "top1_lo": 53.0, "top1_hi": 66.7}
    base = {"top1": 50.0, "top1_lo": 43.1, "top1_hi": 56.9}
    got = tables.compare_rows([a], [c], row, base)
    assert not got.paired and got.verdict == "same"
    assert got.text == "+10.0 (intervals overlap; no per-image predictions)"


def test_repeated_seeds_are_paired_over_all_seeds_predictions(tmp_path):
    accs_a, accs_b = (60.0, 58.0, 63.0), (50.0, 51.0, 49.5)
    a = [_run(tmp_path, f"a{s}", fake_predictions(v, 90.0), seed=s) for s, v in enumerate(accs_a)]
    b = [_run(tmp_path, f"b{s}", fake_predictions(v, 90.0), seed=s) for s, v in enumerate(accs_b)]
    got = tables.paired_runs(a, b)
    ref = stats.paired_seeds(np.stack([fake_predictions(v, 90.0).correct() for v in accs_a]),
                             np.stack([fake_predictions(v, 90.0).correct() for v in accs_b]))
    assert got == ref and got.diff == pytest.approx(np.mean(accs_a) - np.mean(accs_b))
    assert got.basis == "paired over 3 vs 3 seeds x 200 test images" and got.verdict == "higher"
    # a fixed-weights row (torchvision's) is one run: its repeats add no seeds and no seed noise
    fixed = [_run(tmp_path, f"f{s}", fake_predictions(55.0, 90.0), seed=s) for s in range(3)]
    for r in fixed:
        r.planned["encoder"] = "imagenet"
    one = tables.paired_runs(a, fixed)
    assert one == stats.paired_seeds(np.stack([fake_predictions(v, 90.0).correct() for v in accs_a]),
                                     fake_predictions(55.0, 90.0).correct()[None], fixed_b=True)
    # on a share of the labels its seeds draw different labelled images: seeds again
    for r in fixed:
        r.planned["label_fraction"] = 0.1
    assert not tables.fixed_weights(fixed[0]) and tables.paired_runs(a, fixed).basis.startswith("paired over 3 vs 3")


def test_study_sentences_use_holm_corrected_paired_tests_where_cells_have_predictions(study):
    size = rp.size_table(study)
    # the 25% cell (size, 20%) has predictions, the 100% cell (transfer, 30%) has none: intervals
    assert set(size["vb_paired"]) == {False}
    hp = rp.hparam_table(study)
    assert hp["vb_paired"].any()
    text = rp.study_spread(hp, ["temperature", "batch_size"])
    assert "Paired tests of the other 1 cells against it on the same test images, Holm-corrected" in text
    assert "Holm p=" in hp.loc[hp["vb_paired"], "vb_text"].iloc[0]


def test_heatmap_colours_span_a_fixed_width_so_noise_stays_pale(study):
    assert fg.heatmap_limits([50.0, 50.5, 49.8]) == pytest.approx((50.1 - 5.0, 50.1 + 5.0))
    lo, hi = fg.heatmap_limits([30.0, 50.0, 40.0])  # a real 20-point spread still fits
    assert (lo, hi) == pytest.approx((30.0, 50.0))
    hp = rp.hparam_table(study)
    fig = fg.plot_hparam_heatmap(hp)
    mesh = fig.axes[0].collections[0]
    assert mesh.norm.vmax - mesh.norm.vmin == pytest.approx(10.0)
    texts = [t.get_text() for t in fig.axes[0].texts]
    chosen = hp.loc[hp["cv_top1"].idxmax()]
    assert f"{chosen['top1']:.1f}\nchosen" in texts
    shown = rp.hparam_display(hp)
    assert "chosen (best CV on train labels)" in list(shown["Top-1 vs chosen cell (Holm)"])
    matplotlib.pyplot.close(fig)


def test_references_hold_the_course_and_simclr_paper_figures_with_their_budgets():
    refs = rp.references_table().set_index("Published result")
    course = {"selfsuper-transfer": ("32.93", "61.08"), "super-transfer": ("38.15", "66.66"),
              "selfsuper": ("35.77", "63.55"), "super": ("50.80", "76.95")}
    for name, (t1, t5) in course.items():
        row = refs.loc[[i for i in refs.index if i.startswith(f"Course: {name} (")]].iloc[0]
        assert (row["Top-1 (%)"], row["Top-5 (%)"]) == (t1, t5) and "100 epochs" in row["Budget"]
    paper = refs[refs["Source"].str.contains("2002.05709")]
    assert sorted(paper["Top-1 (%)"]) == ["71.60", "78.30"] and set(paper["Top-5 (%)"]) == {"—"}
    assert all("ResNet-50" in b and "224 px" in b for b in paper["Budget"])


def test_fine_tuning_gain_is_paired_with_super_on_the_same_images(study):
    ft = rp.finetune_table(study)
    ref = stats.paired(fake_predictions(*RESULTS["ft-ss"]).correct(), fake_predictions(*RESULTS["super"]).correct())
    assert ft.loc["selfsuper", "gain_paired"] and ft.loc["selfsuper", "gain_text"] == ref.text()
    assert ft.loc["selfsuper", "gain_vs"] == ref.verdict
    shown = rp.finetune_display(ft)
    assert shown["Gain top-1"].iloc[0] == ref.text() + (" (within noise)" if ref.verdict == "same" else "")
    # the size study's cells lack predictions on one side: its sentence says it used the intervals
    assert "95% intervals" in rp.study_spread(rp.size_table(study), ["pct"])


def test_a_damaged_predictions_file_falls_back_to_the_intervals(tmp_path):
    a = _run(tmp_path, "a", fake_predictions(60.0, 80.0))
    b = _run(tmp_path, "b", fake_predictions(50.0, 70.0))
    assert tables.run_predictions(a) is not None
    (a.path / predictions.PREDICTIONS).write_bytes(b"not a zip file")
    assert tables.run_predictions(a) is None and tables.paired_runs([a], [b]) is None
    assert tables.run_predictions(b) is not None
