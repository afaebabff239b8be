"""The linear protocol's stage: the encoder runs once, in ``eval()`` mode and without gradients,
over un-augmented images; everything after that is a convex problem on fixed features
(:mod:`simpleclr.training.probe`): multinomial logistic regression, its weight decay chosen on
validation carved from train, then refit on all of train and scored once on test.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch
from torch import nn

from ...config import LinearEvalConfig
from ..parts.device import Runtime, peak_memory, reset_peak_memory, resolve_runtime, seed_everything
from ..probe import (best_on_validation, changed_keys, extract_features, fit_linear_probe, probe_logits,
                     save_test_predictions, state_copy, topk_accuracy)

if TYPE_CHECKING:
    from ... import data as data_mod
    from ...runs.rundir import RunDir


def linear_eval(cfg: LinearEvalConfig, out_dir: Union[str, Path]) -> dict:
    """Run the linear classification protocol for ``cfg.encoder`` and write the run folder.

    A finished folder (``result.json`` with the same config fingerprint) is returned as it is; a
    folder holding another config raises :class:`simpleclr.runs.rundir.RunConflict`.
    """
    from .. import launch

    t0 = time.perf_counter()

    def here(run: "RunDir") -> dict:
        with run.lock():
            return _linear_eval(cfg, run, t0)

    return launch.run_stage(cfg, out_dir, here)


def _linear_eval(cfg: LinearEvalConfig, run: "RunDir", t0: float) -> dict:
    """:func:`linear_eval`'s work, with the run folder's lock held."""
    from ... import data
    from ..parts.models import SimCLRNet, load_encoder, load_projection_head, source_name, uses_standin

    done = run.finished(cfg)  # another process may have finished it meanwhile
    if done is not None:
        return done
    runtime = resolve_runtime(cfg.device, cfg.precision, cfg.channels_last, cfg.num_threads)
    reset_peak_memory(runtime.device)
    seed_everything(cfg.seed)
    encoder, meta = load_encoder(cfg.encoder, cfg.stem, cfg.width)  # fails fast, before the data is read
    if cfg.probe_layer == "projection":  # g(h): the head's output, read through the frozen encoder
        encoder = SimCLRNet(encoder, load_projection_head(cfg.encoder))
    train, test = _probe_splits(cfg)
    mean, std, input_size = _encoder_input(cfg, meta, train)
    num_classes = train.num_classes

    # Which training images are used: the rule every stage shares (a class-balanced label share,
    # then a val part of it), so the probe sees exactly the supervised rows' labelled images.
    labelled = data.labelled_split(train.labels, cfg.label_fraction, cfg.val_fraction, cfg.label_seed)
    subset, fit, val = labelled.labelled, labelled.fit, labelled.val
    if cfg.rehearsal:  # a rehearsal: the first images of each (sorted) index set, and of test
        subset = subset[:cfg.rehearsal]
        fit, val = fit[fit <= subset[-1]], val[val <= subset[-1]]
        test = dataclasses.replace(test, images=test.images[:cfg.rehearsal], labels=test.labels[:cfg.rehearsal],
                                   coarse_labels=None if test.coarse_labels is None
                                   else test.coarse_labels[:cfg.rehearsal])
    sub_labels = train.labels[subset]
    fit_idx = torch.searchsorted(subset, fit)  # positions inside the labelled subset
    val_idx = torch.searchsorted(subset, val)
    sub_images = train.images if subset.numel() == len(train) else train.images[subset]
    if run.start(cfg, data={"train": train.provenance, "test": test.provenance},
                 device=str(runtime.device)) == "partial":
        run.truncate_metrics([])  # an interrupted earlier attempt: its rows are redone below

    # Frozen encoder: snapshot every weight and BN buffer, extract once, then check nothing moved.
    before = state_copy(encoder)
    encoder = encoder.to(runtime.device)
    if runtime.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    t_feat = time.perf_counter()
    train_feats, test_feats, reused = _frozen_features(cfg, encoder, sub_images, test.images, mean,
                                                       std, input_size, runtime)
    feature_seconds = time.perf_counter() - t_feat
    t_probe = time.perf_counter()
    folds = (data.stratified_folds(sub_labels, cfg.val_folds, cfg.label_seed) if cfg.val_folds > 1
             else None)
    probe = _probe_on_validation(cfg, run, train_feats, sub_labels, fit_idx, val_idx, num_classes,
                                 runtime.device, folds)
    test_logits = probe_logits(probe["final"], test_feats)
    test_acc = topk_accuracy(test_logits, test.labels)
    probe_seconds = time.perf_counter() - t_probe
    _check_frozen(encoder, before)

    if cfg.save_features:
        _save_test_features(cfg, run, test_feats, test, source_name(meta))
    result = {"top1": test_acc["top1"], "top5": test_acc["top5"],
              "n_train": int(subset.numel()), "n_test": len(test), "num_classes": num_classes,
              # the validation the probe really made overrides the split's counts; with folds every
              # labelled image was validated once
              **labelled.record(), **probe["choice"],
              **({} if folds is None else {"val_digest": data.index_digest(labelled.labelled)}),
              "encoder": cfg.encoder, "encoder_source": source_name(meta),
              "encoder_standin": uses_standin(meta), "encoder_meta": dict(meta),
              "input_size": input_size, "mean": list(mean), "std": list(std),
              "probe_layer": cfg.probe_layer, "feature_dim": int(train_feats.shape[1]),
              "probe_iterations": probe["final"].fit_info["iterations"],
              "probe_loss": probe["final"].fit_info["loss"],
              "feature_seconds": feature_seconds, "probe_seconds": probe_seconds,
              "test_features_reused": reused,
              "images_per_s": (int(subset.numel()) + (0 if reused else len(test))) / max(feature_seconds, 1e-9),
              "runtime": runtime.describe(), "wall_time_s": time.perf_counter() - t0,
              **peak_memory(runtime.device),
              **save_test_predictions(run, test_logits, test.labels)}
    run.write_result(result)
    return run.read_result()


# The test split's features of the encoders probed last in this process, up to this many MB (about
# a dozen encoders at CIFAR-100's 10,000 x 512 floats). A plan runs its probes in a shared kernel,
# and every probe of one encoder (each label share) needs the same test features. The test split is
# always extracted whole, in the same batches, so a kept tensor is what a fresh extraction gives,
# bit for bit; the key holds everything the features depend on (weights and buffers, the module
# tree, images, normalisation, size, runtime, batch).
TEST_FEATURES_MB = 256
_test_features: "OrderedDict[str, torch.Tensor]" = OrderedDict()


def features_key(encoder: nn.Module, images_uint8: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float], size: int, runtime: Runtime, batch_size: int) -> str:
    """A sha256 of everything :func:`extract_features` reads, so equal keys mean equal features."""
    h = hashlib.sha256(repr(encoder).encode())
    for name, t in encoder.state_dict().items():
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(repr((tuple(map(float, mean)), tuple(map(float, std)), int(size), runtime.describe(),
                   int(batch_size), tuple(images_uint8.shape))).encode())
    h.update(images_uint8.contiguous().numpy().tobytes())
    return h.hexdigest()


def forget_test_features() -> None:
    """Empty this process's kept test features."""
    _test_features.clear()


def _frozen_features(cfg: LinearEvalConfig, encoder: nn.Module, train_images: torch.Tensor,
                     test_images: torch.Tensor, mean: Sequence[float], std: Sequence[float], size: int,
                     runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(train features, test features, whether the test ones were kept from an earlier probe of the
    same encoder in this process); the encoder is already on the device. A non-finite feature
    means a broken checkpoint and fails."""
    def extract(images: torch.Tensor) -> torch.Tensor:
        return extract_features(encoder, images, mean, std, runtime, size=size,
                                batch_size=cfg.feature_batch_size)

    key = features_key(encoder, test_images, mean, std, size, runtime, cfg.feature_batch_size)
    train = extract(train_images)
    test = _test_features.get(key)
    reused = test is not None
    if test is None:
        test = extract(test_images)
    if not (torch.isfinite(train).all() and torch.isfinite(test).all()):
        raise RuntimeError(f"encoder {cfg.encoder!r} produced non-finite features: the checkpoint "
                           "is broken (diverged training?)")
    _test_features[key] = test
    _test_features.move_to_end(key)
    while sum(t.nelement() * t.element_size() for t in _test_features.values()) > TEST_FEATURES_MB * 2**20:
        _test_features.popitem(last=False)
    return train, test, reused


def _encoder_input(cfg: LinearEvalConfig, meta: dict,
                   train: "data_mod.Split") -> tuple[tuple, tuple, int]:
    """(mean, std, size) the encoder's images get: what it was trained with (its checkpoint's
    meta), else the dataset's statistics and the configured or native size."""
    mean = tuple(meta["mean"]) if meta.get("mean") is not None else tuple(train.mean)
    std = tuple(meta["std"]) if meta.get("std") is not None else tuple(train.std)
    return mean, std, int(meta.get("image_size") or cfg.image_size or train.image_size)


def _probe_splits(cfg: LinearEvalConfig) -> tuple["data_mod.Split", "data_mod.Split"]:
    """The dataset's train and test splits; both must be labelled and non-empty, with the test
    labels inside the train split's classes. Above the dataset's own size they are read at it,
    and the features upsample them (:func:`simpleclr.data.read_size`)."""
    from ... import data

    kwargs = dict(root=cfg.data_dir, image_size=data.read_size(cfg.dataset, cfg.image_size),
                  accept_checksum=cfg.accept_checksum)
    train = data.load_split(cfg.dataset, "train", **kwargs)
    test = data.load_split(cfg.dataset, "test", **kwargs)
    if len(train) == 0 or len(test) == 0 or not train.labelled or not test.labelled:
        raise data.DataError(f"{cfg.dataset} needs labelled train and test splits for linear_eval, "
                             f"got {len(train)} train and {len(test)} test images")
    if int(test.labels.max()) >= train.num_classes:
        raise data.DataError(f"{cfg.dataset}: test labels reach {int(test.labels.max())} but train has "
                             f"{train.num_classes} classes: the two splits do not belong together")
    return train, test


def _probe_on_validation(cfg: LinearEvalConfig, run: "RunDir", feats: torch.Tensor,
                         labels: torch.Tensor, fit_idx: torch.Tensor, val_idx: torch.Tensor,
                         num_classes: int, device: torch.device,
                         folds: Optional[torch.Tensor] = None) -> dict:
    """The weight decay chosen on validation, then the probe refitted on all labelled images.

    Validation is ``folds`` (each labelled image's fold: k-fold cross-validation, every image
    validated once by the probe fitted on the other folds, accuracies pooled over all of them), or
    without folds the one held-out split ``val_idx`` (fitted on ``fit_idx``). Tried from the
    strongest penalty down, each fit warm-started from the last of its fold; one metrics row per
    value. Returns ``{"final": probe, "choice": the result's weight-decay and validation fields}``.
    """
    splits = ([(fit_idx, val_idx)] if folds is None else
              [((folds != k).nonzero().flatten(), (folds == k).nonzero().flatten())
               for k in range(int(folds.max()) + 1)])
    rows, last = [], [None] * len(splits)
    for wd in sorted(set(cfg.weight_decays), reverse=True):
        t = time.perf_counter()
        hits = {"top1": 0.0, "top5": 0.0}
        for i, (f_idx, v_idx) in enumerate(splits):
            last[i] = fit_linear_probe(feats[f_idx], labels[f_idx], num_classes, wd,
                                       max_iter=cfg.probe_max_iter, init=last[i], device=device)
            val = topk_accuracy(probe_logits(last[i], feats[v_idx]), labels[v_idx])
            for k in hits:
                hits[k] += val[k] * v_idx.numel()
        n_val = sum(int(v.numel()) for _, v in splits)
        row = {"weight_decay": wd, "val_top1": hits["top1"] / n_val, "val_top5": hits["top5"] / n_val,
               "loss": last[0].fit_info["loss"], "iterations": last[0].fit_info["iterations"],
               "n_fit": int(splits[0][0].numel()), "n_val": n_val, "folds": len(splits),
               "seconds": time.perf_counter() - t}
        run.log_metrics(row)
        rows.append(row)
    best = best_on_validation(rows, "weight_decay")
    grid = sorted(set(cfg.weight_decays))
    # The best value at the strong end of the grid suggests the grid stopped too early.
    at_edge = len(grid) > 1 and best["weight_decay"] == grid[-1]
    final = fit_linear_probe(feats, labels, num_classes, best["weight_decay"],
                             max_iter=cfg.probe_max_iter, device=device)
    return {"final": final, "choice": {"val_top1": best["val_top1"], "weight_decay": best["weight_decay"],
                                       "weight_decay_grid": grid, "weight_decay_at_strong_edge": at_edge,
                                       "val_folds": best["folds"], "n_fit": best["n_fit"], "n_val": best["n_val"]}}


def _check_frozen(encoder: nn.Module, before: dict[str, torch.Tensor]) -> None:
    """Raise if any weight or buffer of the frozen ``encoder`` differs from the snapshot ``before``."""
    changed = changed_keys(encoder, before)
    if changed:
        raise RuntimeError(f"linear_eval changed frozen encoder weights/buffers ({', '.join(changed[:5])}"
                           f"{' ...' if len(changed) > 5 else ''}): this is a bug, please report it")


def _save_test_features(cfg: LinearEvalConfig, run: "RunDir", test_feats: torch.Tensor,
                        test: "data_mod.Split", encoder_source: str) -> None:
    """features.pt: the test split's features (float16) and labels, for the report's t-SNE."""
    from ...runs.rundir import atomic_torch_save

    atomic_torch_save({"features": test_feats.half(), "labels": test.labels.clone(),
                       "coarse_labels": None if test.coarse_labels is None
                       else test.coarse_labels.clone(),
                       "classes": list(test.classes),
                       "coarse_classes": None if test.coarse_classes is None
                       else list(test.coarse_classes),
                       "encoder": cfg.encoder, "encoder_source": encoder_source},
                      run.features_path)


def linear_eval_on_one_rank(cfg: LinearEvalConfig, out_dir: Union[str, Path]) -> dict:
    """:func:`linear_eval` under torchrun: rank 0 evaluates (features of a frozen encoder and an
    L-BFGS probe take minutes, so sharding would save little), the other ranks wait for it and
    return the same result; when rank 0 fails, they raise
    :class:`~simpleclr.training.parts.distributed.MainRankFailed` with its error's line (rank 0 raises its own)
    instead of waiting for it. Outside torchrun it is :func:`linear_eval`."""
    from ..parts import distributed
    from ...runs.rundir import RunDir

    world = distributed.init_from_env()  # gloo is enough for one small broadcast
    if not world.distributed:
        return linear_eval(cfg, out_dir)
    result = distributed.on_main(world, lambda: linear_eval(cfg, out_dir), "linear_eval")
    return result if result is not None else (RunDir(out_dir).read_result() or {})
