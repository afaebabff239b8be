"""``simpleclr plan rehearse``: every run of a plan through its notebook, cut short, in a folder of
its own; figures recorded; never mistaken for the real runs, never run over them."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from simpleclr.runs.rundir import RunDir
from simpleclr.study import estimate, plans, rehearse
from simpleclr.study.planfile import PlanError, find_plan_file, load_plan

# A pretraining, its probe, a fine-tuning with encoder-lr trials and the random floor: every
# stage and the report, in seconds.
PLAN = """
name: tiny
description: a rehearsal test
defaults:
  all: {dataset: "synthetic-cifar100:classes=10,train=12,test=4,seed=3", image_size: 8,
        progress: false, num_threads: 1, width: 16}
  pretrain: {epochs: 3, batch_size: 40, proj_hidden: 64, proj_out: 32, warmup_epochs: 1,
             knn_every: 1, knn_k: 5}
  supervised: {epochs: 3, batch_size: 32, warmup_epochs: 1}
  linear_eval: {weight_decays: [0.01, 0.1]}
runs:
  - name: pre
    notebook: pretrain
  - name: probe
    notebook: linear_eval
    params: {encoder: "{runs.pre}"}
    report: {row: selfsuper}
  - name: tune
    notebook: supervised
    params: {init: "{runs.pre}", encoder_lr_grid: [1.0, 0.1], trial_epochs: 1}
    report: {finetune: selfsuper}
  - name: random
    notebook: linear_eval
    report: {row: random}
"""


@pytest.mark.slow
def test_a_rehearsal_runs_every_run_cut_short_and_records_it_apart_from_the_real_runs(tmp_path, monkeypatch):
    """The report notebook is left out here (test_report checks a rehearsal's title and warning;
    the full plan's rehearsal record shows it rendered), and the estimator's step timing is
    fixed: the record's estimate is then checked against its own arithmetic."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(PLAN)
    rendered: list = []
    monkeypatch.setattr(plans, "render_report", lambda p, report_dir, kernel=None: rendered.append(p) or "")
    monkeypatch.setattr(estimate.Estimator, "measure", lambda self, *a, **k: (0.01, 0.0))
    assert rehearse.rehearse_plan(tmp_path / "tiny.yaml", outputs=tmp_path / "rehearsal", images=8,
                                  progress=False) == 0
    # the plan as the rehearsal's root resolves it (run references point into its own folders)
    same_root = load_plan(tmp_path / "tiny.yaml", tmp_path / "rehearsal")
    real = load_plan(tmp_path / "tiny.yaml", tmp_path / "outputs")
    folder = tmp_path / "rehearsal" / "tiny"
    rec = rehearse.load_record(folder / "rehearsal.json")
    assert [r["name"] for r in rec["runs"]] == list(real.runs) and rec["failed"] == []
    assert [p.outputs for p in rendered] == [folder]
    for r in rec["runs"]:
        run = RunDir(folder / r["name"])
        saved = run.read_config()
        # the plan's exact config, cut by the runtime field alone
        assert saved["config"]["rehearsal"] == 8
        assert saved["fingerprint"] == same_root.runs[r["name"]].config.fingerprint()
        assert r["peak_memory_mb"] > 0 and r["estimate_gpu_s"] > rehearse.GPU_NOTEBOOK_S
        units = estimate.work_units(r["stage"], real.runs[r["name"]].config.to_dict())
        assert r["work_units"] == units
        assert r["estimate_here_s"] == pytest.approx(estimate.NOTEBOOK_OVERHEAD_S + units * 0.01)
        if r["stage"] != "linear_eval":
            assert [m["epoch"] for m in run.read_metrics()] == [1, 2] and run.read_result()["steps"] == 2
        # the real plan's run never takes it for done
        assert plans.RunDir(folder / r["name"]).status(saved["fingerprint"]) == "stale"
    assert saved and real.runs["pre"].config.fingerprint() == same_root.runs["pre"].config.fingerprint()
    assert not (tmp_path / "outputs").exists()
    # the real plan pointed at the rehearsal's folder stops before any compute, and says why
    with pytest.raises(PlanError, match="holds a rehearsal of this run, and this is the real plan"):
        plans.run_plan(tmp_path / "tiny.yaml", outputs=tmp_path / "rehearsal", progress=False)
    # one step at each training shape's batch: measured, since the plan's batches are below FIT_BATCHES
    shapes = {(s["stage"], s["batch_size"]): s for s in rec["shapes"]}
    assert {s["width"] for s in rec["shapes"]} == {16}  # timed at the plan's width
    assert set(shapes) == {("pretrain", 40), ("supervised", 32)}
    assert all(s["how"] == "measured" and s["step_s"] > 0 and s["memory_mb"] > 0 for s in shapes.values())
    assert "| tune | supervised | done |" in (folder / "rehearsal.md").read_text()

    # a folder holding a real run is never cleared for a rehearsal
    RunDir(tmp_path / "mixed" / "tiny" / "pre").start(real.runs["pre"].config)
    with pytest.raises(PlanError, match="is a real run, not a rehearsal"):
        rehearse.rehearse_plan(tmp_path / "tiny.yaml", outputs=tmp_path / "mixed")
    assert RunDir(tmp_path / "mixed" / "tiny" / "pre").read_config() is not None


def test_a_step_between_measured_batches_is_read_off_the_line_through_them():
    points = [{"batch_size": 48, "step_s": 3.0, "memory_mb": 900.0},
              {"batch_size": 128, "step_s": 11.0, "memory_mb": 1700.0}]
    assert rehearse.step_at(points, 128) == {"step_s": 11.0, "memory_mb": 1700.0, "how": "measured"}
    at = rehearse.step_at(points, 512)
    assert math.isclose(at["step_s"], 11.0 + 384 * 0.1) and math.isclose(at["memory_mb"], 1700.0 + 384 * 10)
    assert at["how"] == "line through batches 48 and 128"
    one = rehearse.step_at(points[:1], 96)
    assert one["step_s"] == 6.0 and one["how"] == "scaled from batch 48"


SHIPPED = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "plans").glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_plan_cuts_to_its_own_configs_with_stand_in_weights_where_needed(name, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.setattr(plans, "check_imagenet_weights", lambda: "no network here")
    p = load_plan(find_plan_file(name), tmp_path)
    cut = plans.cut_plan(p, 16)
    assert list(cut.runs) == list(p.runs)
    for n, spec in cut.runs.items():
        assert spec.config.rehearsal == 16 and spec.path == p.runs[n].path
        if plans.uses_imagenet(p.runs[n]):  # the one field a rehearsal may change: absent weights
            assert "imagenet_weights" in cut.standins
            assert str(cut.standin_path("imagenet_weights")) in str(spec.config.to_dict())
        else:
            assert spec.config.fingerprint() == p.runs[n].config.fingerprint()


# The official training splits: class-balanced, 500 images a class.
OFFICIAL_TRAIN = {"cifar100": (100, 500), "tiny-imagenet": (200, 500)}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_run_of_every_shipped_plan_fits_the_real_datasets(name, tmp_path):
    """The plan's pre-run check (plans.check_images) at the official datasets' counts: no run of
    a shipped plan meets a batch larger than its images or a label share without validation
    images on the real data; generated data sets are generated, as the plan would."""
    from simpleclr import data

    def labels_of(c):
        if c.dataset in OFFICIAL_TRAIN:
            classes, per = OFFICIAL_TRAIN[c.dataset]
            return torch.arange(classes).repeat_interleave(per)
        return data.load_labels(c.dataset, root=tmp_path / "data")

    p = load_plan(find_plan_file(name), tmp_path)
    assert {c.config.dataset for c in p.runs.values()} - set(OFFICIAL_TRAIN) <= {
        c.config.dataset for c in p.runs.values() if c.config.dataset.startswith("synthetic-")}
    plans.check_images(p, list(p.runs), labels_of)


# The report's sections and the line a section shows when the plan has no runs for it.
SECTIONS = {"finetune": ("Fine-tuning on CIFAR-100", "no fine-tuning runs"),
            "label_efficiency": ("by share of CIFAR-100 labels", "no label-efficiency runs"),
            "size_study": ("by pretraining-set size", "no size-study runs"),
            "hparam": ("Hyperparameter study", "no hyperparameter runs"),
            "length": ("SimCLR probe by pretraining length", "no length series")}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_plans_report_draws_every_section_its_runs_feed(name, tmp_path, monkeypatch):
    """Run folders shaped exactly like the plan's (its run names, configs and report roles; made-up
    results), then the report notebook's cells in this process: every section the plan feeds is
    drawn with every run behind it, the others say they have none."""
    import zlib

    from helpers.reportcells import execute_report_cells
    from helpers.studyfolders import build_study

    text = find_plan_file(name).read_text()
    p = load_plan(find_plan_file(name), tmp_path / "outputs")
    results = {}
    for n, spec in p.runs.items():
        top1 = 5.0 + zlib.crc32(n.encode()) % 50
        results[n] = (top1, min(100.0, top1 + 25.0))
    study = build_study(tmp_path, text, results)
    cells, ns = execute_report_cells(study.outputs, monkeypatch, tsne_points=60)
    shown = "\n".join(cells)
    roles = {k for spec in p.runs.values() for k in spec.report}
    for role, (title, none) in SECTIONS.items():
        assert (title in shown) == (role in roles) and (none in shown) == (role not in roles), role
    for n in p.runs:  # the provenance table lists every run
        assert f">{n}<" in shown, n
    seeds: dict = {}  # each main row over all its seeds (three per row in the full plan)
    for spec in p.runs.values():
        if "row" in spec.report:
            seeds[spec.report["row"]] = seeds.get(spec.report["row"], 0) + 1
    assert {r: int(ns["main"].loc[r, "n"]) for r in seeds} == seeds
