"""Whether a run's images fit its config, decided from its dataset's training labels alone.

Every stage chooses its training images from the labels before it reads an image: pretraining
takes the kNN monitor's share, then the size study's subset (:func:`pretrain.pretrain_images`);
supervised training and the probe take the label share every row shares, then its validation part
(``data.labelled_split``; the probe's folds, ``data.stratified_folds``). Each then fails on a batch
larger than its images or a share that leaves no validation image. :func:`check_images` makes the
same choices and the same checks with no image and no model, so a plan checks all its runs in
seconds before the first starts, instead of a GPU meeting the error at the run that has it, hours
in.
"""
from __future__ import annotations

import shlex
from typing import Optional

import torch

from .. import data as data_mod
from ..config import LinearEvalConfig, PretrainConfig, StageConfig, SupervisedConfig
from .parts import distributed
from .trainer import fit_schedule
from .stages.pretrain import pretrain_images
from .stages.supervised import labelled_images

__all__ = ["check_images", "launcher_processes"]


def launcher_processes(launcher: Optional[str]) -> int:
    """The processes a launcher command starts on one machine (``--nproc-per-node N``); 1 without
    one, or where the command does not say."""
    words = shlex.split(launcher or "")
    for i, w in enumerate(words):
        for flag in ("--nproc-per-node", "--nproc_per_node"):
            if w == flag and i + 1 < len(words) and words[i + 1].isdigit():
                return int(words[i + 1])
            if w.startswith(flag + "=") and w.split("=", 1)[1].isdigit():
                return int(w.split("=", 1)[1])
    return 1


def check_images(cfg: StageConfig, labels: torch.Tensor) -> dict[str, int]:
    """The run's image counts (``n_train``, ``n_val``), chosen from ``labels`` (its split's, as
    :func:`simpleclr.data.load_labels` reads them) exactly as the stage chooses them; raises the
    stage's own :class:`~simpleclr.config.ConfigError` or :class:`~simpleclr.data.DataError`."""
    world = distributed.World(size=launcher_processes(cfg.launcher))
    if isinstance(cfg, PretrainConfig):
        train_idx, val_idx = pretrain_images(cfg, labels)
        fit_schedule(cfg, len(train_idx), world)
        return {"n_train": len(train_idx), "n_val": 0 if val_idx is None else len(val_idx)}
    if isinstance(cfg, SupervisedConfig):
        labelled = labelled_images(cfg, labels)
        fit_schedule(cfg, len(labelled.fit), world)
        return {"n_train": len(labelled.fit), "n_val": len(labelled.val)}
    if isinstance(cfg, LinearEvalConfig):
        labelled = data_mod.labelled_split(labels, cfg.label_fraction, cfg.val_fraction, cfg.label_seed)
        if cfg.val_folds > 1:  # every labelled image validates once, and the refit takes them all
            data_mod.stratified_folds(labels[labelled.labelled], cfg.val_folds, cfg.label_seed)
            return {"n_train": len(labelled.labelled), "n_val": len(labelled.labelled)}
        return {"n_train": len(labelled.fit), "n_val": len(labelled.val)}
    raise TypeError(f"check_images: no stage config: {type(cfg).__name__}")
