"""Self-supervised pretraining of a ResNet-18 by ``cfg.method`` (:mod:`simpleclr.training.methods`).

The method supplies its heads, loss, views and per-step extras; :func:`simpleclr.training.trainer.fit`
runs them with the recipe's optimizer and per-iteration warm-up and cosine schedule, and a kNN
monitor (:class:`simpleclr.training.probe.KnnMonitor`) on a held-out part of the training split only
watches. The final checkpoint holds the encoder (and the heads a probe may read).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from ... import data as data_mod
from ..parts import distributed, models
from ...config import PretrainConfig
from ..parts.device import Runtime, seed_everything
from ..methods import Method, get_method
from ..probe import KnnMonitor
from ...runs.rundir import RunDir
from ...types import PathLike
from .. import trainer
from ..trainer import RunStart, TrainParts, data_record, fit_schedule, last_value, load_data, rehearsal_cut, seed_of

__all__ = ["pretrain", "pretrain_images", "build_pretrain"]


def build_pretrain(cfg: PretrainConfig, runtime: Runtime, *, image_size: int, mean: Any, std: Any,
                   total_steps: int, warmup_steps: int,
                   world: distributed.World = distributed.World()) -> TrainParts:
    """Everything one pretraining step needs, built exactly as :func:`pretrain` builds it: the
    method's module on a fresh encoder, and the trainer's parts around it."""
    method: Method = get_method(cfg.method)(cfg, models.resnet18_encoder(cfg.stem, cfg.width),
                                            image_size, mean, std)
    return trainer.build_parts(method, method, cfg, runtime, world, total_steps, warmup_steps)


def pretrain(cfg: PretrainConfig, out_dir: PathLike) -> dict:
    """Pretraining by ``cfg.method`` into the run folder ``out_dir``; returns result.json's dict."""
    start = trainer.open_run(cfg, out_dir)
    if start.result is not None:
        return start.result
    with trainer.writer_lock(start):
        return _pretrain(cfg, start, out_dir)


def _pretrain(cfg: PretrainConfig, start: RunStart, out_dir: PathLike) -> dict:
    """:func:`pretrain`'s work, with the run folder's lock held."""
    run, runtime, world = start.run, start.runtime, start.world
    done = run.finished(cfg)  # another process may have finished it meanwhile
    if done is not None:
        return done
    seed_everything(cfg.seed)
    split = load_data(cfg, cfg.split)
    train_idx, val_idx = pretrain_images(cfg, split.labels)
    _, total, _, warmup = fit_schedule(cfg, len(train_idx), world)
    if world.is_main:
        run.start(cfg, data=data_record(split, train_idx, val_idx), device=str(runtime.device))
    images = split.images[train_idx].to(runtime.device)
    parts = build_pretrain(cfg, runtime, image_size=split.image_size, mean=split.mean, std=split.std,
                           total_steps=total, warmup_steps=warmup, world=world)
    meta = {"stem": cfg.stem, "mean": split.mean, "std": split.std, "image_size": split.image_size,
            "source": {"run": str(out_dir), "stage": "pretrain", "dataset": cfg.dataset,
                       "split": cfg.split, "subset_fraction": cfg.subset_fraction, "method": cfg.method}}
    monitor = _kept(cfg, run, parts.model.encoder, meta, world,
                    _knn_monitor(cfg, parts.model.encoder, split, images, train_idx, val_idx, runtime, world))
    fitted = trainer.fit(cfg, run, world, parts, images, monitor=monitor, desc=cfg.method)
    result = fitted.summary
    if world.is_main:
        state = models.encoder_state(parts.model.encoder, meta)
        state.update(parts.model.heads())
        path = run.save_checkpoint(state, "final")
        # n_labelled 0: no label reaches the weights (the kNN monitor only reads them)
        result.update({"knn_top1": last_value(fitted.rows, "knn_top1"), "checkpoint": str(path),
                       "n_train": len(train_idx), "n_labelled": 0, "lr": parts.lr, "method": cfg.method,
                       "views": repr(parts.model.augment)})  # the views as resolved at this size
        run.write_result(result)
    distributed.barrier()
    return run.read_result() or result


def _kept(cfg: PretrainConfig, run: RunDir, encoder: nn.Module, meta: dict, world: distributed.World,
          monitor: Optional[Callable[[int, bool], dict]]) -> Optional[Callable[[int, bool], dict]]:
    """``monitor`` that first keeps the encoder as ``checkpoints/epoch<N>.pt`` after each of
    ``keep_epochs`` (its meta naming the epoch, which a probe records); a rehearsal, which never
    reaches them, keeps every one at its last epoch so that the probes of the series run."""
    kept = sorted({int(e) for e in cfg.keep_epochs})
    if not kept:
        return monitor

    def wrapped(epoch: int, last: bool) -> dict:
        due = kept if (cfg.rehearsal and last) else [e for e in kept if e == epoch + 1]
        if world.is_main:
            for e in due:
                run.save_checkpoint(models.encoder_state(encoder, {**meta, "epoch": e}), f"epoch{e}")
        return monitor(epoch, last) if monitor is not None else {}

    return wrapped


def _knn_monitor(cfg: PretrainConfig, encoder: nn.Module, split: "data_mod.Split",
                 images: torch.Tensor, train_idx: torch.Tensor, val_idx: Optional[torch.Tensor],
                 runtime: Runtime, world: distributed.World) -> Optional[KnnMonitor]:
    """The loop's evaluation: every ``knn_every`` epochs and at the last, rank 0 scores ``encoder``
    by weighted kNN of the held-out images against a fixed bank of training images (``images`` are
    the training images on the device). Only for watching: nothing is chosen on it."""
    if not (cfg.knn_every > 0 and val_idx is not None and len(val_idx) > 0):
        return None
    dev = runtime.device
    bank_idx = rehearsal_cut(cfg, _bank_indices(len(train_idx), cfg.knn_max_bank, cfg.seed))
    val_idx = rehearsal_cut(cfg, val_idx)
    return KnnMonitor(encoder, images[bank_idx.to(dev)], split.labels[train_idx][bank_idx],
                      split.images[val_idx].to(dev), split.labels[val_idx], split.mean, split.std,
                      runtime, every=cfg.knn_every, k=cfg.knn_k, temperature=cfg.knn_temperature,
                      num_classes=split.num_classes, active=world.is_main)


def pretrain_images(cfg: PretrainConfig, labels: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(train_idx, val_idx or None) into the split whose ``labels`` these are: the kNN monitor's
    val images first, then the size study's subset of the rest. Not a label budget (pretraining
    reads no labels), so not ``data.labelled_split``: a fixed monitor set keeps the size study's
    subsets nested. Decided by the labels alone, so a plan checks it before any run
    (:mod:`simpleclr.training.preflight`)."""
    labelled = len(labels) == 0 or int(labels.min()) >= 0
    if labelled and cfg.val_fraction > 0:
        train_idx, val_idx = data_mod.train_val_split(labels, cfg.val_fraction, cfg.seed)
    else:
        train_idx, val_idx = torch.arange(len(labels)), None
    if cfg.subset_fraction < 1.0:
        train_idx = train_idx[data_mod.stratified_subset(labels[train_idx], cfg.subset_fraction,
                                                         cfg.subset_seed)]
    return train_idx, val_idx


def _bank_indices(n: int, max_bank: int, seed: int) -> torch.Tensor:
    """A fixed, seeded choice of at most ``max_bank`` training images for the kNN bank (sorted)."""
    if n <= max_bank:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed_of(seed, 3))
    return torch.randperm(n, generator=gen)[:max_bank].sort().values
