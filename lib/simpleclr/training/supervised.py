"""Supervised training of a ResNet-18 from scratch, or fine-tuning an encoder (``init``): its
step, its parts and its stage, with the trials that choose the encoder's lr on validation.

The labelled images are the linear probe's at the same share and seed (``data.labelled_split``);
the test split is read once, at the end. The loop, resume and the run folder's lock are
:mod:`simpleclr.training.loop`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from . import augment as augment_mod
from .. import data as data_mod
from . import distributed, evaluate, models
from ..config import ConfigError, SupervisedConfig, encoder_lr_grid, stage_of
from .device import Runtime, eval_mode, seed_everything
from ..runs.rundir import RunDir
from ..types import PathLike
from .loop import (Loop, TrainParts, data_record, finish_step, fit_schedule, last_value, load_data,
                   loop_summary, loss_input, parallel_model, rehearsal_cut, run_training_stage,
                   to_channels_last, train_loop, train_parts)

__all__ = ["train_supervised", "supervised_step", "SupervisedParts", "build_supervised", "predict_logits"]


def supervised_step(parts: "SupervisedParts", images: torch.Tensor, labels: torch.Tensor,
                    generator: Optional[torch.Generator],
                    check_finite: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One supervised iteration (crop + flip, cross-entropy in float32) on a uint8 batch on the
    device; returns the detached (loss, grad_norm). ``check_finite``: see :func:`finish_step`."""
    parts.optimizer.zero_grad(set_to_none=True)
    x = to_channels_last(parts.augment(images, generator), parts.runtime)
    with parts.runtime.autocast():
        logits = parts.train_model(x)
    loss = F.cross_entropy(loss_input(logits), labels, label_smoothing=parts.label_smoothing)
    return finish_step(loss, parts, check_finite)


@dataclass
class SupervisedParts(TrainParts):
    """The classifier and augmentation, with the training parts, the normalisation the images get
    and where the encoder came from."""

    model: models.Classifier
    augment: "augment_mod.SupervisedAugment"
    mean: tuple
    std: tuple
    encoder_meta: dict
    label_smoothing: float


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
    model, train_model = parallel_model(model, cfg, runtime, world)
    augment = augment_mod.SupervisedAugment(image_size, mean, std, padding=cfg.crop_padding)
    return SupervisedParts(augment=augment, mean=tuple(mean), std=tuple(std), encoder_meta=meta,
                           label_smoothing=cfg.label_smoothing,
                           **train_parts(model, train_model, cfg, runtime, total_steps, warmup_steps))


def input_size(cfg: SupervisedConfig, split: "data_mod.Split") -> int:
    """The side the network sees: ``image_size``, else the data's own. Above the data's own the
    batches are upsampled (the split is read at its size, :func:`loop.load_data`)."""
    return cfg.image_size or split.image_size


def _classify(model: models.Classifier, images: torch.Tensor, labels: torch.Tensor, mean: Any,
              std: Any, runtime: Runtime, size: Optional[int] = None) -> dict[str, float]:
    """Top-1 / top-5 (percent) of ``model`` on uint8 images, in eval mode, without augmentation."""
    return evaluate.topk_accuracy(predict_logits(model, images, mean, std, runtime, size), labels.cpu(),
                                  ks=(1, 5))


def predict_logits(model: models.Classifier, images: torch.Tensor, mean: Any, std: Any,
                   runtime: Runtime, size: Optional[int] = None) -> torch.Tensor:
    """``model``'s CPU logits for uint8 images (resized to ``size`` when given), in eval mode,
    without augmentation: what validation and the final test read."""
    with eval_mode(model):
        feats = evaluate.extract_features(model.encoder, images, mean, std, runtime, size=size)
        with torch.no_grad():
            logits = model.fc(feats.to(model.fc.weight.device, model.fc.weight.dtype))
    return logits.cpu()


def _fit_supervised(cfg: SupervisedConfig, run: RunDir, split: "data_mod.Split",
                    labelled: "data_mod.LabelledSplit", runtime: Runtime, world: distributed.World,
                    encoder_lr_scale: float, trial: bool = False) -> tuple[SupervisedParts, list[dict], Loop]:
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

    def step(idx: torch.Tensor, gen: torch.Generator, check: bool):
        return supervised_step(parts, images[idx], labels[idx], gen, check)

    has_val = len(labelled.val) > 0
    if has_val:
        val_idx = rehearsal_cut(cfg, labelled.val)
        val_images, val_labels = split.images[val_idx].to(dev), split.labels[val_idx]

    def validate(epoch: int, last: bool) -> dict:
        if not has_val or not world.is_main:
            return {}
        acc = _classify(parts.model, val_images, val_labels, parts.mean, parts.std, runtime, size)
        return {"val_top1": acc["top1"], "val_top5": acc["top5"]}

    rows, loop = train_loop(cfg, run, world, parts, step, validate, len(labelled.fit),
                            desc=stage_of(cfg).command_for(cfg).name, interrupt_after_first=not trial)
    return parts, rows, loop


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
        _, rows, loop = _fit_supervised(cfg, run, split, labelled, runtime, world,
                                        cfg.encoder_lr_scale, trial=True)
        if world.is_main:
            run.write_result({"val_top1": last_value(rows, "val_top1"),
                              "val_top5": last_value(rows, "val_top5"), "epochs": loop.epochs,
                              "wall_time_s": loop.state["clock"]["elapsed_s"]})
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
    (``<out_dir>/trials/encoder_lr<value>``) and :func:`evaluate.best_on_validation` picks the scale.
    """
    grid = encoder_lr_grid(cfg)
    choice = {"encoder_lr_grid": list(grid), "encoder_lr_trials": [], "trials_wall_time_s": 0.0}
    if len(grid) == 1:
        return {**choice, "encoder_lr_scale": grid[0], "encoder_lr_chosen_on": None}
    trials = [_run_trial(_trial_config(cfg, v), out_dir / "trials" / f"encoder_lr{v:g}", split,
                         labelled, runtime, world) for v in grid]
    best = evaluate.best_on_validation(trials, "encoder_lr_scale")
    return {**choice, "encoder_lr_scale": best["encoder_lr_scale"], "encoder_lr_trials": trials,
            "encoder_lr_chosen_on": "validation",
            "trials_wall_time_s": sum(t["wall_time_s"] for t in trials)}


def train_supervised(cfg: SupervisedConfig, out_dir: PathLike) -> dict:
    """Supervised training (``cfg.init`` None) or fine-tuning into ``out_dir``; returns the result.

    The labelled images are the probes' ones at the same share and seed (``data.labelled_split``);
    with an ``encoder_lr_grid``, short trials choose the encoder lr scale on validation first, and
    the run then trains on all of them (``n_train`` in the result).
    """
    return run_training_stage(cfg, out_dir, _train_supervised)


def labelled_images(cfg: SupervisedConfig, labels: torch.Tensor) -> "data_mod.LabelledSplit":
    """The labelled images the run trains and validates on, as indices into the split whose
    ``labels`` these are: the probes' ones at the same share and seed (``data.labelled_split``).
    Decided by the labels alone, so a plan checks it before any run
    (:mod:`simpleclr.training.preflight`)."""
    if len(labels) and int(labels.min()) < 0:
        raise ConfigError(f"SupervisedConfig.split={cfg.split!r} of {cfg.dataset} has unlabelled "
                          "images: choose a labelled split (e.g. train)")
    return data_mod.labelled_split(labels, cfg.subset_fraction, cfg.val_fraction, cfg.subset_seed)


def _train_supervised(cfg: SupervisedConfig, run: RunDir, runtime: Runtime,
                      world: distributed.World, out_dir: PathLike) -> dict:
    """:func:`train_supervised`'s work, with the run folder's lock held."""
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
    parts, rows, loop = _fit_supervised(cfg, run, split, final, runtime, world,
                                        choice["encoder_lr_scale"])
    result = loop_summary(rows, loop)
    if world.is_main:
        dev, size = runtime.device, input_size(cfg, split)
        test_images, test_labels = rehearsal_cut(cfg, test.images), rehearsal_cut(cfg, test.labels)
        logits = predict_logits(parts.model, test_images.to(dev), parts.mean, parts.std, runtime, size)
        acc = evaluate.topk_accuracy(logits, test_labels.cpu(), ks=(1, 5))
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
                       "n_train": len(final.fit), "n_test": len(test_labels), "lr": parts.lr,
                       "encoder_standin": models.uses_standin(parts.encoder_meta),
                       **labelled.record(), **choice,
                       "wall_time_s": result["wall_time_s"] + choice["trials_wall_time_s"],
                       **evaluate.save_test_predictions(run, logits, test_labels)})
        run.write_result(result)
    distributed.barrier()
    return run.read_result() or result
