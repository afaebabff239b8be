"""The report's methods section (report/methods.py) on hand-made run folders: each method's probe
with its interval and paired tests against the floor and `super`, and a best method named only
where the paired test separates it from every other."""
from __future__ import annotations

from helpers.studyfolders import build_study

from simpleclr.report import methods as rm
from simpleclr.report import prose
from simpleclr.report.model import load_study

METHODS_PLAN = """
name: methods
description: three methods and the floor
defaults:
  all: {dataset: "synthetic-cifar100:train=2,test=2", progress: false, width: 16}
  pretrain: {epochs: 2, warmup_epochs: 0}
  supervised: {epochs: 2, warmup_epochs: 0}
runs:
  - name: random
    notebook: linear_eval
    report: {row: random}
  - name: super
    notebook: supervised
    report: {row: super}
  - name: simclr-pre
    notebook: pretrain
  - name: simclr
    notebook: linear_eval
    params: {encoder: "{runs.simclr-pre}"}
  - name: byol-pre
    notebook: pretrain
    params: {method: byol}
  - name: byol
    notebook: linear_eval
    params: {encoder: "{runs.byol-pre}"}
  - name: vicreg-pre
    notebook: pretrain
    params: {method: vicreg}
  - name: vicreg
    notebook: linear_eval
    params: {encoder: "{runs.vicreg-pre}"}
"""


def _study(tmp_path, results):
    plan = build_study(tmp_path, METHODS_PLAN, {"random": (5.0, 20.0), "super": (40.0, 70.0), **results})
    return load_study(tmp_path / "outputs" / plan.name)


def test_each_method_gets_its_probe_interval_and_paired_tests(tmp_path):
    study = _study(tmp_path, {"simclr": (20.0, 50.0), "byol": (30.0, 60.0), "vicreg": (25.0, 55.0)})
    df = rm.methods_table(study)
    assert list(df.index) == ["simclr", "byol", "vicreg"]  # the registry's order
    assert list(df["name"]) == ["SimCLR", "BYOL", "VICReg"]
    assert df.loc["byol", "top1"] == 30.0 and df.loc["byol", "low"] < 30.0 < df.loc["byol", "high"]
    # 200 test images; the weaker run's right images are a subset of the stronger one's (helpers)
    assert df.loc["byol", "vs_floor"] == 25.0 and df.loc["byol", "floor_verdict"] == "higher"
    assert df.loc["simclr", "vs_super"] == -20.0 and "lower" in df.loc["simclr", "vs_super_text"]
    assert df.loc["vicreg", "knn_top1"] == 20.0 and df.loc["vicreg", "seeds"] == 1
    shown = rm.methods_display(df)
    assert list(shown.index) == ["SimCLR", "BYOL", "VICReg"]
    assert "p<0.001" in shown.loc["BYOL", "vs random floor (paired)"]
    verdict = rm.methods_verdict(study, df)
    assert verdict.startswith("BYOL gives the best probe: chosen on training labels (cross-validated probe "
                              "29.0%), it reaches 30.0% on the test images, ahead of every other method by "
                              "the paired test")
    assert "Over the random floor by the paired test: SimCLR, BYOL, VICReg." in verdict
    assert "BYOL gives the best probe" in prose.headline(study)


def test_no_best_method_is_named_inside_the_noise(tmp_path):
    """30.0 against 29.5 on 200 images: one image apart, which the paired test does not resolve."""
    study = _study(tmp_path, {"simclr": (29.5, 50.0), "byol": (30.0, 60.0), "vicreg": (10.0, 55.0)})
    verdict = rm.methods_verdict(study)
    assert verdict.startswith("No method is separated from all the others by the paired test: BYOL, chosen "
                              "on training labels (cross-validated probe 29.0%), reaches 30.0% on the test "
                              "images")
    assert "No method is separated" in prose.headline(study)


def test_a_plan_of_one_method_has_no_methods_section(tmp_path):
    study = _study(tmp_path, {"simclr": (20.0, 50.0), "byol": (30.0, 60.0), "vicreg": (25.0, 55.0)})
    del study.runs["byol"], study.runs["vicreg"]
    assert rm.method_probes(study) == {} and len(rm.methods_table(study)) == 0
    assert "gives the best probe" not in prose.headline(study)


def test_the_best_method_is_chosen_on_training_labels_not_the_test_set(tmp_path, monkeypatch):
    """BYOL has the highest test top-1 but VICReg the highest cross-validated accuracy on training
    labels: VICReg is the candidate, and since BYOL is above it on the test images, no method is
    named best. A verdict picking by test accuracy would name BYOL."""
    import helpers.studyfolders as sf
    monkeypatch.setitem(sf.CV_TOP1, "vicreg", 40.0)
    study = _study(tmp_path, {"simclr": (10.0, 50.0), "byol": (30.0, 60.0), "vicreg": (20.0, 55.0)})
    df = rm.methods_table(study)
    assert df.loc["vicreg", "cv_top1"] == 40.0 and df.loc["byol", "cv_top1"] == 29.0
    assert rm.methods_display(df).loc["VICReg", "Probe CV (train labels)"] == "40.0"
    verdict = rm.methods_verdict(study, df)
    assert verdict.startswith("No method is separated from all the others by the paired test: VICReg, chosen "
                              "on training labels (cross-validated probe 40.0%), reaches 20.0%")
    assert "BYOL gives" not in verdict


def test_the_evidence_page_gives_each_methods_paired_gains_and_the_plans_compute(tmp_path):
    """scripts/evidence.py --methods writes the report's methods table (the same paired tests) and
    the plan's total run time read from every run's result.json."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "evidence", Path(__file__).resolve().parents[2] / "scripts" / "evidence.py")
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    study = _study(tmp_path, {"simclr": (20.0, 50.0), "byol": (30.0, 60.0), "vicreg": (25.0, 55.0)})
    df = rm.methods_table(study)
    text = ev.methods_section([study.plan_dir])
    row = next(line for line in text.splitlines() if line.startswith("| BYOL |"))
    assert row.startswith(f"| BYOL | 30.0 [{df.loc['byol', 'low']:.1f}, {df.loc['byol', 'high']:.1f}] | "
                          f"{df.loc['byol', 'vs_floor_text']} | {df.loc['byol', 'vs_super_text']} | 29.0 | ")
    assert "higher" in df.loc["byol", "vs_floor_text"]
    assert rm.methods_verdict(study, df) in text
    wall = sum(json.loads(p.read_text()).get("wall_time_s", 0) for p in study.plan_dir.glob("*/result.json"))
    assert wall > 0 and f"took {wall / 60:.1f} min of run time in all" in text


KEPT = "  pretrain: {epochs: 2, warmup_epochs: 0, keep_epochs: [1]}"
LENGTH_PLAN = METHODS_PLAN.replace("  pretrain: {epochs: 2, warmup_epochs: 0}", KEPT) + '''  - name: simclr-e1
    notebook: linear_eval
    params: {encoder: "{runs.simclr-pre}/checkpoints/epoch1.pt"}
'''


def test_a_kept_checkpoints_probe_is_a_length_point_not_another_seed(tmp_path):
    """methods-length's shape: a probe of a kept checkpoint stays out of the methods table (SimCLR
    keeps one seed) and the evidence page lists it by epoch with its paired gain over the floor
    and the kNN monitor at that epoch; a pretraining with no kept probe has no length series."""
    import importlib.util
    from pathlib import Path

    from helpers.studyfolders import fake_predictions
    from simpleclr.report import stats

    spec = importlib.util.spec_from_file_location(
        "evidence", Path(__file__).resolve().parents[2] / "scripts" / "evidence.py")
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    results = {"random": (5.0, 20.0), "super": (40.0, 70.0), "simclr": (20.0, 50.0), "byol": (30.0, 60.0),
               "vicreg": (25.0, 55.0), "simclr-e1": (12.0, 40.0)}
    plan = build_study(tmp_path, LENGTH_PLAN, results)
    study = load_study(tmp_path / "outputs" / plan.name)
    df = rm.methods_table(study)
    assert df.loc["simclr", "seeds"] == 1 and df.loc["simclr", "top1"] == 20.0
    text = ev.methods_section([study.plan_dir])
    rows = [line for line in text.split("### Against length")[1].splitlines() if line.startswith("| simclr-pre")]
    floor = fake_predictions(5.0, 20.0).correct()
    early = stats.paired(fake_predictions(12.0, 40.0).correct(), floor)
    assert rows[0].startswith(f"| simclr-pre | simclr | 1 | 10 | {stats.wilson(12.0, 200).text()} | "
                              f"{early.verdict}: {early.text(unit=' points')} | 10.0 |")
    assert rows[1].startswith("| simclr-pre | simclr | 2 | 20 | ") and rows[1].endswith("| 20.0 |")
    assert len(rows) == 2 and "| byol-pre |" not in text.split("### Against length")[1]
