"""Hand-made plan folders for the plan and report tests: a small plan file, run folders written
through RunDir exactly as the stages write them, and the manifest run_plan writes."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from simpleclr.study import plans
from simpleclr.runs import predictions
from simpleclr.runs.rundir import RunDir

# Every report role once, two seeds for the probed rows, a failed run and a run never started.
STUDY_PLAN = """
name: study
description: a hand-made study
defaults:
  all: {dataset: "synthetic-cifar100:train=2,test=2", progress: false}
  pretrain: {epochs: 2, warmup_epochs: 0}
  supervised: {epochs: 2, warmup_epochs: 0}
runs:
  - name: ss-pre-s{seed}
    matrix: {seed: [0, 1]}
    notebook: pretrain
    params: {seed: "{seed}"}
  - name: ss-s{seed}
    matrix: {seed: [0, 1]}
    notebook: linear_eval
    params: {encoder: "{runs.ss-pre-s{seed}}", seed: "{seed}"}
    report: {row: selfsuper, hparam: [temperature, batch_size]}
  - name: super
    notebook: supervised
    report: {row: super, label_efficiency: super}
  - name: super-probe
    notebook: linear_eval
    params: {encoder: "{runs.super}"}
    report: {row: super-probe, features: super}
  - name: random
    notebook: linear_eval
    report: {row: random}
  - name: tr-pre
    notebook: pretrain
    params: {subset_fraction: 1.0, steps: 10}
  - name: transfer
    notebook: linear_eval
    params: {encoder: "{runs.tr-pre}"}
    report: {row: selfsuper-transfer, size_study: true}
  - name: size-pre
    notebook: pretrain
    params: {subset_fraction: 0.25, steps: 10}
  - name: size
    notebook: linear_eval
    params: {encoder: "{runs.size-pre}"}
    report: {size_study: true}
  - name: hp-pre
    notebook: pretrain
    params: {temperature: 0.2}
  - name: hp
    notebook: linear_eval
    params: {encoder: "{runs.hp-pre}"}
    report: {hparam: [temperature, batch_size]}
  - name: ft-ss
    notebook: supervised
    params: {init: "{runs.ss-pre-s0}", encoder_lr_grid: [0.1, 1.0], trial_epochs: 1}
    report: {finetune: selfsuper}
  - name: ss-labels
    notebook: linear_eval
    params: {encoder: "{runs.ss-pre-s0}", label_fraction: 0.1}
    report: {label_efficiency: selfsuper}
  - name: super-labels
    notebook: supervised
    params: {subset_fraction: 0.1}
    report: {label_efficiency: super}
  - name: imagenet
    notebook: linear_eval
    params: {encoder: imagenet}
    report: {row: imagenet-super}
"""

# (top1, top5) of each finished probe / supervised run; pretrain runs get loss and kNN.
RESULTS = {
    "ss-s0": (40.0, 70.0), "ss-s1": (44.0, 74.0), "super": (50.0, 80.0), "random": (5.0, 15.0),
    "transfer": (30.0, 60.0), "size": (20.0, 50.0), "hp": (35.0, 65.0), "ft-ss": (53.0, 82.0),
    "ss-labels": (12.0, 30.0), "super-labels": (8.0, 25.0), "super-probe": (48.0, 79.0),
}
# The probes' cross-validated accuracy on training labels, where it is not top-1 less a point: the
# size study's cells rank the other way round on it than on test.
CV_TOP1 = {"size": 33.0}
# Runs written as folders from before per-image predictions were saved: the report falls back.
NO_PREDICTIONS = {"transfer"}
N_TEST = 200
FAILED = {"imagenet": "WeightsError: ImageNet weights resnet18-f37072fd.pth are not in /x"}
# The fine-tuning run's trials: (encoder lr scale, validation top-1); 0.1 wins.
TRIALS = ((0.1, 30.0), (1.0, 25.0))
TRAIN_IMAGES = 200  # synthetic-cifar100:train=2 has 100 classes


def label_record(fraction: float) -> dict:
    """What data.labelled_split records, for a run at this label share of TRAIN_IMAGES."""
    n = round(TRAIN_IMAGES * fraction)
    return {"label_fraction": fraction, "label_seed": 0, "val_fraction": 0.1, "n_labelled": n,
            "n_fit": n - n // 10, "n_val": n // 10}


def write_plan(tmp: Path, text: str = STUDY_PLAN, name: str = "study.yaml") -> Path:
    path = tmp / name
    path.write_text(textwrap.dedent(text))
    return path


def finish(spec: plans.RunSpec, result: dict, metrics: Optional[list[dict]] = None,
           features: Optional[dict] = None, data: Optional[dict] = None) -> RunDir:
    """Write a finished run folder for ``spec`` as a stage would (config, metrics, result)."""
    rd = RunDir(spec.path)
    rd.start(spec.config, data=data or {})
    for row in metrics or []:
        rd.log_metrics(row)
    if features is not None:
        torch.save(features, rd.features_path)
    rd.write_result(result)
    return rd


def fake_features(n: int = 200, seed: int = 0, dim: int = 16) -> dict:
    rng = np.random.default_rng(seed)
    fine = np.arange(n) % 100
    feats = rng.normal(size=(n, dim)).astype(np.float32)
    feats[:, 0] += fine // 5  # superclass structure along one axis
    return {"features": torch.from_numpy(feats).half(), "labels": torch.from_numpy(fine),
            "coarse_labels": torch.from_numpy(fine // 5), "classes": [f"c{i}" for i in range(100)],
            "coarse_classes": [f"super{i}" for i in range(20)]}


def fake_predictions(top1: float, top5: float, n: int = N_TEST) -> predictions.Predictions:
    """Predictions with the given accuracies on ``n`` test images: the first ``top1`` percent are
    right, so of two runs the weaker one's right images are a subset of the stronger one's."""
    labels = np.arange(n) % 100
    k1, k5 = round(n * top1 / 100), round(n * top5 / 100)
    top1_pred = np.where(np.arange(n) < k1, labels, (labels + 1) % 100)
    return predictions.Predictions(top1=top1_pred, top5_hit=np.arange(n) < k5, labels=labels)


def build_study(tmp: Path, text: str = STUDY_PLAN, results: Optional[dict] = None) -> plans.Plan:
    """The STUDY_PLAN (or ``text``) with every run finished except the failed ImageNet probe, plus
    the manifest; ``results`` adds (top1, top5) of further runs to RESULTS."""
    results = {**RESULTS, **(results or {})}
    plan = plans.load_plan(write_plan(tmp, text), tmp / "outputs")
    states = {}
    for name, spec in plan.runs.items():
        if name in FAILED:
            states[name] = {"state": "failed", "reason": FAILED[name]}
            continue
        if spec.notebook == "pretrain":
            n_train = round(1000 * spec.config.subset_fraction)
            metrics = [{"epoch": e, "step": 10 * e, "loss": 6.0 - e, "knn_top1": 10.0 * e}
                       for e in (1, 2)]
            seen = {"images_seen": spec.config.steps * spec.config.batch_size} if spec.config.steps else {}
            finish(spec, {"final_loss": 4.0, "knn_top1": 20.0 + spec.config.seed, "epochs": 2,
                          "steps": 20, "wall_time_s": 12.0, **seen},
                   metrics, data={"name": spec.config.dataset, "source": "generated",
                                  "sha256": "ab" * 32, "n_train": n_train})
        else:
            top1, top5 = results[name]
            result = {"top1": top1, "top5": top5, "wall_time_s": 3.0}
            data = {"train": {"source": "generated", "sha256": "cd" * 32},
                    "test": {"source": "generated", "sha256": "cd" * 32}}
            metrics = None
            if spec.notebook == "supervised":  # as train_supervised records it: size in the data
                data = {"name": spec.config.dataset, "source": "generated", "image_size": 32}
                metrics = [{"epoch": e, "step": 5 * e, "loss": 4.0 - e, "val_top1": 5.0 * e} for e in (1, 2)]
                # fine-tuning refits on all its labelled images after its trials
                labels = label_record(spec.config.subset_fraction)
                result.update(labels, n_test=200, n_train=labels["n_labelled"])
                if spec.config.init:
                    result.update({"encoder_lr_scale": 0.1, "encoder_lr_grid": [0.1, 1.0],
                                   "encoder_lr_trials": [{"encoder_lr_scale": v, "val_top1": a, "epochs": 1}
                                                         for v, a in TRIALS]})
            feats = fake_features(seed=len(name)) if spec.notebook == "linear_eval" else None
            if spec.notebook == "linear_eval":
                labels = label_record(spec.config.label_fraction)
                result.update({"encoder_source": "checkpoint", "n_train": labels["n_labelled"], "n_test": 200,
                               "input_size": 32, "val_top1": CV_TOP1.get(name, top1 - 1.0), **labels})
            if name not in NO_PREDICTIONS:
                result.update(predictions.save_predictions(Path(spec.path) / predictions.PREDICTIONS,
                                                           fake_predictions(top1, top5)))
            finish(spec, result, metrics, feats, data=data)
        states[name] = {"state": "done", "reason": None}
    plans.write_manifest(plan, states)
    return plan
