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
    assert verdict.startswith("BYOL gives the best probe (30.0%), ahead of every other method by the paired test")
    assert "Over the random floor by the paired test: SimCLR, BYOL, VICReg." in verdict
    assert "BYOL gives the best probe" in prose.headline(study)


def test_no_best_method_is_named_inside_the_noise(tmp_path):
    """30.0 against 29.5 on 200 images: one image apart, which the paired test does not resolve."""
    study = _study(tmp_path, {"simclr": (29.5, 50.0), "byol": (30.0, 60.0), "vicreg": (10.0, 55.0)})
    verdict = rm.methods_verdict(study)
    assert verdict.startswith("No method is separated from all the others by the paired test: BYOL has the "
                              "highest point estimate (30.0%)")
    assert "No method is separated" in prose.headline(study)


def test_a_plan_of_one_method_has_no_methods_section(tmp_path):
    study = _study(tmp_path, {"simclr": (20.0, 50.0), "byol": (30.0, 60.0), "vicreg": (25.0, 55.0)})
    del study.runs["byol"], study.runs["vicreg"]
    assert rm.method_probes(study) == {} and len(rm.methods_table(study)) == 0
    assert "gives the best probe" not in prose.headline(study)
