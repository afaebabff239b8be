"""Supervised training of a ResNet-18 from scratch, or fine-tuning an encoder (``init``): its
step, its parts and its stage, with the trials that choose the encoder's lr on validation.

The labelled images are the linear probe's at the same share and seed (``data.labelled_split``);
the test split is read once, at the end. The loop, resume and the run folder's lock are
:mod:`simpleclr.training.trainer`'s; the objective is :class:`CrossEntropy`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..parts import augment as augment_mod
from ... import data as data_mod
from ..parts import distributed, models
from ...config import ConfigError, SupervisedConfig, encoder_lr_grid, stage_of
from ..parts.device import Runtime, seed_everything
from .. import probe, trainer
from ...runs.rundir import RunDir
from ...types import PathLike
from ..trainer import (Fitted, Objective, RunStart, TrainParts, data_record, fit_schedule, last_value,
                       load_data, loss_input, rehearsal_cut)

__all__ = ["train_supervised", "CrossEntropy", "SupervisedParts", "build_supervised", "labelled_images"]


class CrossEntropy(Objective):
    """The supervised objective: crop + flip, then cross-entropy (label smoothing) in float32."""

    def __init__(self, augment: "augment_mod.SupervisedAugment", label_smoothing: float) -> None:
        self.augment, self.label_smoothing = augment, label_smoothing

    def views(self, images: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        return self.augment(images, generator)

    def loss(self, out: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(loss_input(out), labels, label_smoothing=self.label_smoothing)


@dataclass
class SupervisedParts:
    """The trainer's parts for the classifier, the normalisation the images get and where the
    encoder came from."""

    train: TrainParts
    mean: tuple
    std: tuple
    encoder_meta: dict

    @property
    def model(self) -> models.Classifier:
        return self.train.model  # type: ignore[return-value]


def build_supervised(cfg: SupervisedConfig, runtime: Runtime, *, image_size: int, mean: Any, std: Any,
                     num_classes: int, total_steps: int, warmup_steps: int,
                     world: distributed.World = distributed.World()) -> SupervisedParts:
    """Classifier (fresh or from ``cfg.init``), augmentation, optimizer and schedule."""
    if cfg.init is None:
        encoder, meta = models.resnet18_encoder(cfg.stem, cfg.width), {"stem": cfg.stem, "source": "scratch"}
    else:
        encoder, meta = models.load_encoder(cfg.init, stem=cfg.stem, width=cfg.width)
    if meta.get("mean") is not None and meta.get("std") is not None:
        mean, std = tuple(meta["mean"]), tuple(meta["std"])  # the normalisation it was trained with
    model = models.Classifier(encoder, num_classes, freeze_encoder=cfg.encoder_lr_scale == 0)
    objective = CrossEntropy(augment_mod.SupervisedAugment(image_size, mean, std, padding=cfg.crop_padding),
                             cfg.label_smoothing)
    parts = trainer.build_parts(model, objective, cfg, runtime, world, total_steps, warmup_steps)
    return SupervisedParts(parts, mean=tuple(mean), std=tuple(std), encoder_meta=meta)


def input_size(cfg: SupervisedConfig, split: "data_mod.Split") -> int:
    """The side the network sees: ``image_size``, else the data's own. Above the data's own the
    batches are upsampled (the split is read at its size, :func:`simpleclr.training.trainer.load_data`)."""
    return cfg.image_size or split.image_size


def _fit_supervised(cfg: SupervisedConfig, run: RunDir, split: "data_mod.Split",
                    labelled: "data_mod.LabelledSplit", runtime: Runtime, world: distributed.World,
                    encoder_lr_scale: float, trial: bool = False) -> tuple[SupervisedParts, Fitted]:
    """Train on ``labelled.fit``, validating on ``labelled.val`` every epoch, into ``run``.

    Seeded here, so a trial and the real run start exactly as a lone run of their config would.
    """
    seed_everything(cfg.seed)
    _, total, _, warmup = fit_schedule(cfg, len(labelled.fit), world)
    dev = runtime.device
    images = split.images[labelled.fit].to(dev)
    labels = split.labels[labelled.fit].to(dev)
    size = input_size(cfg, split)
    parts = build_supervised(cfg.replace(encoder_lr_scale=encoder_lr_scale), runtime,
                             image_size=size, mean=split.mean, std=split.std,
                             num_classes=split.num_classes, total_steps=total,
                             warmup_steps=warmup, world=world)

    monitor = None
    if len(labelled.val) > 0:
        val_idx = rehearsal_cut(cfg, labelled.val)
        monitor = probe.Validation(parts.model, split.images[val_idx].to(dev), split.labels[val_idx],
                                   parts.mean, parts.std, runtime, size, active=world.is_main)
    fitted = trainer.fit(cfg, run, world, parts.train, images, labels, monitor,
                         desc=stage_of(cfg).command_for(cfg).name, rehearse_resume=not trial)
    return parts, fitted


def _trial_config(cfg: SupervisedConfig, scale: float) -> SupervisedConfig:
    """The short run that scores one encoder lr scale: ``trial_epochs`` (at most ``epochs``), the
    warm-up the same share of it, everything else as the real run."""
    epochs = min(cfg.trial_epochs, cfg.epochs)
    return cfg.replace(encoder_lr_grid=(), encoder_lr_scale=scale, epochs=epochs,
                       warmup_epochs=cfg.warmup_epochs * epochs / cfg.epochs)


def _run_trial(cfg: SupervisedConfig, out_dir: Path, split: "data_mod.Split",
               labelled: "data_mod.LabelledSplit", runtime: Runtime,
               world: distributed.World) -> dict:
    """One trial in its own run folder (resumable, finished ones reused); its validation figures.

    Trials never look at the test split: their result holds validation accuracy only.
    """
    run = RunDir(out_dir)
    done = run.finished(cfg)
    if done is None:
        if world.is_main:
            run.start(cfg, data={"labels": labelled.record()}, device=str(runtime.device))
        _, fitted = _fit_supervised(cfg, run, split, labelled, runtime, world,
                                    cfg.encoder_lr_scale, trial=True)
        rows = fitted.rows
        if world.is_main:
            run.write_result({"val_top1": last_value(rows, "val_top1"),
                              "val_top5": last_value(rows, "val_top5"), "epochs": fitted.summary["epochs"],
                              "wall_time_s": fitted.summary["wall_time_s"]})
            run.checkpoint_path("last").unlink(missing_ok=True)  # done: only its figures are kept
        distributed.barrier()
        done = run.read_result() or {}
    return {"encoder_lr_scale": cfg.encoder_lr_scale, "val_top1": done["val_top1"],
            "val_top5": done["val_top5"], "epochs": done["epochs"],
            "wall_time_s": done["wall_time_s"]}


def _choose_encoder_lr(cfg: SupervisedConfig, out_dir: Path, split: "data_mod.Split",
                       labelled: "data_mod.LabelledSplit", runtime: Runtime,
                       world: distributed.World) -> dict:
    """The encoder lr scale for the real run, chosen on validation, with the evidence.

    A grid of one value is used as it is (no trials). Otherwise each value gets a trial
    (``<out_dir>/trials/encoder_lr<value>``) and :func:`probe.best_on_validation` picks the scale.
    """
    grid = encoder_lr_grid(cfg)
    choice = {"encoder_lr_grid": list(grid), "encoder_lr_trials": [], "trials_wall_time_s": 0.0}
    if len(grid) == 1:
        return {**choice, "encoder_lr_scale": grid[0], "encoder_lr_chosen_on": None}
    trials = [_run_trial(_trial_config(cfg, v), out_dir / "trials" / f"encoder_lr{v:g}", split,
                         labelled, runtime, world) for v in grid]
    best = probe.best_on_validation(trials, "encoder_lr_scale")
    return {**choice, "encoder_lr_scale": best["encoder_lr_scale"], "encoder_lr_trials": trials,
            "encoder_lr_chosen_on": "validation",
            "trials_wall_time_s": sum(t["wall_time_s"] for t in trials)}


def train_supervised(cfg: SupervisedConfig, out_dir: PathLike) -> dict:
    """Supervised training (``cfg.init`` None) or fine-tuning into ``out_dir``; returns the result.

    The labelled images are the probes' ones at the same share and seed (``data.labelled_split``);
    with an ``encoder_lr_grid``, short trials choose the encoder lr scale on validation first, and
    the run then trains on all of them (``n_train`` in the result).
    """
    start = trainer.open_run(cfg, out_dir)
    if start.result is not None:
        return start.result
    with trainer.writer_lock(start):
        return _train_supervised(cfg, start, out_dir)


def labelled_images(cfg: SupervisedConfig, labels: torch.Tensor) -> "data_mod.LabelledSplit":
    """The labelled images the run trains and validates on, as indices into the split whose
    ``labels`` these are: the probes' ones at the same share and seed (``data.labelled_split``).
    Decided by the labels alone, so a plan checks it before any run
    (:mod:`simpleclr.training.preflight`)."""
    if len(labels) and int(labels.min()) < 0:
        raise ConfigError(f"SupervisedConfig.split={cfg.split!r} of {cfg.dataset} has unlabelled "
                          "images: choose a labelled split (e.g. train)")
    return data_mod.labelled_split(labels, cfg.subset_fraction, cfg.val_fraction, cfg.subset_seed)


def _train_supervised(cfg: SupervisedConfig, start: RunStart, out_dir: PathLike) -> dict:
    """:func:`train_supervised`'s work, with the run folder's lock held."""
    run, runtime, world = start.run, start.runtime, start.world
    done = run.finished(cfg)  # another process may have finished it meanwhile
    if done is not None:
        return done
    split = load_data(cfg, cfg.split, upsample=True)
    labelled = labelled_images(cfg, split.labels)
    fit_schedule(cfg, len(labelled.fit), world)  # a bad fit fails here, before any trial
    # Trials choose on validation, then the run refits on every labelled image, as a probe does;
    # without a choice to make, a held-out share only watches the run.
    final = labelled.refit() if len(encoder_lr_grid(cfg)) > 1 else labelled
    test = load_data(cfg, "test", upsample=True)
    if world.is_main:
        record = data_record(split, final.fit, labelled.val)
        record.update(test={**test.provenance, "n": len(test)}, labels=labelled.record())
        run.start(cfg, data=record, device=str(runtime.device))
    choice = _choose_encoder_lr(cfg, Path(out_dir), split, labelled, runtime, world)
    parts, fitted = _fit_supervised(cfg, run, split, final, runtime, world, choice["encoder_lr_scale"])
    rows, result = fitted.rows, fitted.summary
    if world.is_main:
        dev, size = runtime.device, input_size(cfg, split)
        test_images, test_labels = rehearsal_cut(cfg, test.images), rehearsal_cut(cfg, test.labels)
        logits = probe.predict_logits(parts.model, test_images.to(dev), parts.mean, parts.std, runtime, size)
        acc = probe.topk_accuracy(logits, test_labels.cpu(), ks=(1, 5))
        meta = {"stem": parts.encoder_meta["stem"], "mean": parts.mean, "std": parts.std,
                "image_size": size,
                "source": {"run": str(out_dir), "stage": stage_of(cfg).command_for(cfg).name,
                           "dataset": cfg.dataset, "split": cfg.split, "init": cfg.init,
                           "init_source": parts.encoder_meta.get("source")}}
        state = models.encoder_state(parts.model.encoder, meta)
        state["fc"] = {k: v.detach().cpu() for k, v in parts.model.fc.state_dict().items()}
        state["classes"] = list(split.classes)
        path = run.save_checkpoint(state, "final")
        result.update({"top1": acc["top1"], "top5": acc["top5"],
                       "val_top1": last_value(rows, "val_top1"),
                       "val_top5": last_value(rows, "val_top5"), "checkpoint": str(path),
                       "n_train": len(final.fit), "n_test": len(test_labels), "lr": parts.train.lr,
                       "encoder_standin": models.uses_standin(parts.encoder_meta),
                       **labelled.record(), **choice,
                       "wall_time_s": result["wall_time_s"] + choice["trials_wall_time_s"],
                       **probe.save_test_predictions(run, logits, test_labels)})
        run.write_result(result)
    distributed.barrier()
    return run.read_result() or result
