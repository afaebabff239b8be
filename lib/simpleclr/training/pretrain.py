"""SimCLR pretraining (Chen et al. 2020) of a ResNet-18: its step, its parts and its stage.

Two augmented views per image, a projection head, the NT-Xent loss over the (DDP-gathered)
projections, LARS with a per-iteration warm-up and cosine schedule, and a kNN monitor on a held-out
part of the training split that only watches. The loop, resume and the run folder's lock are
:mod:`simpleclr.training.loop`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from . import augment as augment_mod
from .. import data as data_mod
from . import distributed, evaluate, models
from ..config import PretrainConfig
from .device import Runtime, eval_mode, seed_everything
from .losses import nt_xent
from ..runs.rundir import RunDir
from ..types import PathLike
from .loop import (TrainParts, data_record, finish_step, fit_schedule, last_value, load_data, loop_summary,
                   loss_input, parallel_model, rehearsal_cut, run_training_stage, seed_of, to_channels_last,
                   train_loop, train_parts)

__all__ = ["pretrain_simclr", "pretrain_images", "simclr_step", "SimCLRParts", "build_simclr", "default_blur_prob"]


def simclr_step(parts: "SimCLRParts", images: torch.Tensor, generator: Optional[torch.Generator],
                check_finite: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One SimCLR iteration on a uint8 batch already on the device; returns the detached device
    tensors (loss, grad_norm), read when the caller chooses. ``check_finite``: see
    :func:`finish_step`."""
    parts.optimizer.zero_grad(set_to_none=True)
    v1, v2 = parts.augment.two_views(images, generator)  # augment: two views on the device
    x = to_channels_last(torch.cat([v1, v2]), parts.runtime)
    with parts.runtime.autocast():
        z = parts.train_model(x)  # forward: one pass over the 2B views, so BN sees both
    z1, z2 = loss_input(z).chunk(2)
    loss = nt_xent(distributed.gather_with_grad(z1), distributed.gather_with_grad(z2), parts.temperature)
    return finish_step(loss, parts, check_finite)  # backward, guard, optimizer and schedule steps


def default_blur_prob(image_size: int, blur_prob: Optional[float]) -> float:
    """SimCLR's Gaussian blur only pays at larger images: off below 64 px, p=0.5 from 64 px."""
    if blur_prob is not None:
        return blur_prob
    return 0.0 if image_size < 64 else 0.5


@dataclass
class SimCLRParts(TrainParts):
    """The model and augmentation, with the training parts (compiled form, optimizer, schedule,
    scaler, lr)."""

    model: models.SimCLRNet
    augment: "augment_mod.SimCLRAugment"
    temperature: float


def build_simclr(cfg: PretrainConfig, runtime: Runtime, *, image_size: int, mean: Any, std: Any,
                 total_steps: int, warmup_steps: int,
                 world: distributed.World = distributed.World()) -> SimCLRParts:
    """Everything one SimCLR step needs, built exactly as :func:`pretrain_simclr` builds it."""
    encoder = models.resnet18_encoder(cfg.stem, cfg.width)
    head = models.ProjectionHead(encoder.feature_dim, cfg.proj_hidden, cfg.proj_out, cfg.proj_bn)
    model, train_model = parallel_model(models.SimCLRNet(encoder, head), cfg, runtime, world)
    augment = augment_mod.SimCLRAugment(image_size, mean, std, scale=(cfg.crop_scale_min, 1.0),
                                        jitter_strength=cfg.jitter_strength,
                                        blur_prob=default_blur_prob(image_size, cfg.blur_prob))
    return SimCLRParts(augment=augment, temperature=cfg.temperature,
                       **train_parts(model, train_model, cfg, runtime, total_steps, warmup_steps))


def pretrain_simclr(cfg: PretrainConfig, out_dir: PathLike) -> dict:
    """SimCLR pretraining of a ResNet-18 into the run folder ``out_dir``; returns result.json's dict."""
    return run_training_stage(cfg, out_dir, _pretrain)


def _pretrain(cfg: PretrainConfig, run: RunDir, runtime: Runtime, world: distributed.World,
              out_dir: PathLike) -> dict:
    """:func:`pretrain_simclr`'s work, with the run folder's lock held."""
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
    parts = build_simclr(cfg, runtime, image_size=split.image_size, mean=split.mean, std=split.std,
                         total_steps=total, warmup_steps=warmup, world=world)

    def step(idx: torch.Tensor, gen: torch.Generator, check: bool):
        return simclr_step(parts, images[idx], gen, check)

    meta = {"stem": cfg.stem, "mean": split.mean, "std": split.std, "image_size": split.image_size,
            "source": {"run": str(out_dir), "stage": "pretrain", "dataset": cfg.dataset,
                       "split": cfg.split, "subset_fraction": cfg.subset_fraction}}
    monitor = _kept(cfg, run, parts.model.encoder, meta, world,
                    _knn_monitor(cfg, parts.model.encoder, split, images, train_idx, val_idx, runtime, world))
    rows, loop = train_loop(cfg, run, world, parts, step, monitor, len(train_idx), desc="simclr",
                            interrupt_after_first=True)
    result = loop_summary(rows, loop)
    if world.is_main:
        state = models.encoder_state(parts.model.encoder, meta)
        state["head"] = {k: v.detach().cpu() for k, v in parts.model.head.state_dict().items()}
        path = run.save_checkpoint(state, "final")
        # n_labelled 0: no label reaches the weights (the kNN monitor only reads them)
        result.update({"knn_top1": last_value(rows, "knn_top1"), "checkpoint": str(path),
                       "n_train": len(train_idx), "n_labelled": 0, "lr": parts.lr})
        run.write_result(result)
    distributed.barrier()
    return run.read_result() or result


def _kept(cfg: PretrainConfig, run: RunDir, encoder: nn.Module, meta: dict, world: distributed.World,
          evaluate: Callable[[int, bool], dict]) -> Callable[[int, bool], dict]:
    """``evaluate`` that first keeps the encoder as ``checkpoints/epoch<N>.pt`` after each of
    ``keep_epochs`` (its meta naming the epoch, which a probe records); a rehearsal, which never
    reaches them, keeps every one at its last epoch so that the probes of the series run."""
    kept = sorted({int(e) for e in cfg.keep_epochs})

    def wrapped(epoch: int, last: bool) -> dict:
        due = kept if (cfg.rehearsal and last) else [e for e in kept if e == epoch + 1]
        if world.is_main:
            for e in due:
                run.save_checkpoint(models.encoder_state(encoder, {**meta, "epoch": e}), f"epoch{e}")
        return evaluate(epoch, last)

    return wrapped


def _knn_monitor(cfg: PretrainConfig, encoder: nn.Module, split: "data_mod.Split",
                 images: torch.Tensor, train_idx: torch.Tensor, val_idx: Optional[torch.Tensor],
                 runtime: Runtime, world: distributed.World) -> Callable[[int, bool], dict]:
    """The loop's evaluation: every ``knn_every`` epochs and at the last, rank 0 scores ``encoder``
    by weighted kNN of the held-out images against a fixed bank of training images (``images`` are
    the training images on the device). Only for watching: nothing is chosen on it."""
    if not (cfg.knn_every > 0 and val_idx is not None and len(val_idx) > 0):
        return lambda epoch, last: {}
    dev = runtime.device
    bank_idx = rehearsal_cut(cfg, _bank_indices(len(train_idx), cfg.knn_max_bank, cfg.seed))
    bank_images, bank_labels = images[bank_idx.to(dev)], split.labels[train_idx][bank_idx]
    val_idx = rehearsal_cut(cfg, val_idx)
    val_images, val_labels = split.images[val_idx].to(dev), split.labels[val_idx]

    def monitor_epoch(epoch: int, last: bool) -> dict:
        if not ((epoch + 1) % cfg.knn_every == 0 or last) or not world.is_main:
            return {}
        with eval_mode(encoder):
            bank = evaluate.extract_features(encoder, bank_images, split.mean, split.std, runtime)
            queries = evaluate.extract_features(encoder, val_images, split.mean, split.std, runtime)
        return {"knn_top1": evaluate.knn_top1(bank, bank_labels, queries, val_labels, k=cfg.knn_k,
                                              temperature=cfg.knn_temperature,
                                              num_classes=split.num_classes)}

    return monitor_epoch


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
