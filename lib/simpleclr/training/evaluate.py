"""Frozen-feature evaluation: feature extraction, weighted kNN, top-k, and the linear probe.

The linear protocol (:func:`linear_eval`) runs the encoder once, in ``eval()`` mode and without
gradients, over un-augmented images; everything after that is a convex problem on fixed features:
multinomial logistic regression, its weight decay chosen on a validation split carved from train,
then refit on all of train and scored once on test.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .augment import normalize
from ..config import LinearEvalConfig
from .device import Runtime, eval_mode, peak_memory, reset_peak_memory, resolve_runtime, seed_everything

if TYPE_CHECKING:
    from .. import data as data_mod
    from ..runs.rundir import RunDir


# ---- features ---------------------------------------------------------------------------
def _same_device(a: torch.device, b: torch.device) -> bool:
    """Equal devices, where an index-less device (e.g. "cuda") means the current one."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def extract_features(encoder: nn.Module, images_uint8: torch.Tensor, mean: Sequence[float],
                     std: Sequence[float], runtime: Runtime, *, size: Optional[int] = None,
                     batch_size: int = 512) -> torch.Tensor:
    """float32 CPU features ``(N, D)`` of uint8 ``(N, 3, H, W)`` images, without augmentation.

    The encoder runs in ``eval()`` (BN uses its running statistics and never updates them; its mode
    is restored afterwards), under ``no_grad`` and the runtime's autocast, on batches moved to
    ``runtime.device`` (where the encoder must already live). ``size`` resizes the images first.
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4 or images_uint8.shape[1] != 3:
        raise ValueError(f"extract_features needs uint8 images of shape (N, 3, H, W), got "
                         f"{images_uint8.dtype} {tuple(images_uint8.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid: use an integer >= 1")
    param = next(encoder.parameters(), None)
    if param is not None and not _same_device(param.device, runtime.device):
        raise ValueError(f"the encoder is on {param.device} but runtime.device is {runtime.device}: "
                         "move it with encoder.to(runtime.device) first")
    chunks = []
    # no_grad, not inference_mode: the features feed an autograd fit (the probe) afterwards.
    with eval_mode(encoder), torch.no_grad():
        for start in range(0, images_uint8.shape[0], batch_size):
            x = images_uint8[start:start + batch_size].to(runtime.device, non_blocking=True)
            x = normalize(x, mean, std, size)
            if runtime.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with runtime.autocast():
                h = encoder(x)
            chunks.append(h.float().flatten(1).cpu())
    if not chunks:
        return torch.empty(0, getattr(encoder, "feature_dim", 512))
    return torch.cat(chunks)


# ---- kNN and top-k ----------------------------------------------------------------------
def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, *,
                k: int = 200, temperature: float = 0.1, num_classes: int,
                chunk_size: Optional[int] = None) -> torch.Tensor:
    """Predicted labels by weighted kNN (InstDisc / solo-learn): cosine similarity, the ``k``
    nearest bank entries vote for their class with weight ``exp(sim / temperature)``.

    Runs on ``bank``'s device in chunks of queries so the similarity matrix stays under ~128 MB.
    """
    if bank.shape[0] == 0:
        raise ValueError("knn needs a non-empty feature bank")
    if temperature <= 0 or k < 1:
        raise ValueError(f"knn needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    dev = bank.device
    bank = F.normalize(bank.float(), dim=1)
    bank_labels = bank_labels.to(dev).long()
    k = min(k, bank.shape[0])
    chunk = chunk_size or max(1, (1 << 25) // bank.shape[0])
    preds = []
    for start in range(0, queries.shape[0], chunk):
        q = F.normalize(queries[start:start + chunk].to(dev).float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        # Subtracting each row's top similarity keeps exp() finite at small temperatures and
        # leaves the vote unchanged (a common factor per query).
        weight = ((sim - sim[:, :1]) / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=dev)
        votes.scatter_add_(1, bank_labels[idx], weight)
        preds.append(votes.argmax(1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=dev)


def knn_top1(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
             query_labels: torch.Tensor, *, k: int = 200, temperature: float = 0.1,
             num_classes: int) -> float:
    """Top-1 accuracy (percent) of weighted kNN classification of ``queries`` against ``bank``."""
    if queries.shape[0] == 0:
        raise ValueError("knn_top1 needs at least one query")
    pred = knn_predict(bank, bank_labels, queries, k=k, temperature=temperature,
                       num_classes=num_classes)
    return float((pred.cpu() == query_labels.cpu().long()).float().mean()) * 100.0


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor,
                  ks: Iterable[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": ..., "top5": ...}`` in percent; k above the number of classes counts every class."""
    ks = tuple(ks)
    if logits.shape[0] == 0:
        raise ValueError("topk_accuracy needs at least one sample")
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top == labels.to(logits.device).long().view(-1, 1)
    return {f"top{k}": float(hit[:, :min(k, kmax)].any(1).float().mean()) * 100.0 for k in ks}


# ---- the linear probe -------------------------------------------------------------------
def fit_linear_probe(feats: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     weight_decay: float, *, max_iter: int = 500, tolerance: float = 1e-4,
                     init: Optional[nn.Linear] = None, device: Optional[torch.device] = None,
                     dtype: torch.dtype = torch.float32) -> nn.Linear:
    """Multinomial logistic regression on frozen features, as an ``nn.Linear`` on raw features.

    Minimises ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (bias free) over standardised
    features by full-batch L-BFGS, to ``tolerance`` on the largest gradient entry or ``max_iter``
    steps; scikit-learn's ``LogisticRegression(C=1 / (n * weight_decay))`` solves the same problem
    (docs/architecture.md, "Design notes"). ``init`` warm-starts from a previous probe; the result's
    ``fit_info`` holds the objective, iterations and largest gradient.
    """
    _check_probe_inputs(feats, labels, num_classes, weight_decay)
    labels = labels.long()
    device = device or feats.device
    x = feats.to(device=device, dtype=dtype)
    y = labels.to(device)
    mu, sd = _standardisation(x)
    z = (x - mu) / sd

    weight, bias = _initial_probe(init, num_classes, mu, sd, device, dtype)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=tolerance, tolerance_change=1e-9,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ weight.T + bias, y)
        if weight_decay > 0:
            loss = loss + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
        final_loss = float(closure().detach())
    state = opt.state[weight]  # L-BFGS keeps its counters under the first parameter
    probe = _raw_space_probe(weight, bias, mu, sd)
    grad_max = max(float(p.grad.abs().max()) for p in (weight, bias))
    probe.fit_info = {"loss": final_loss, "iterations": int(state.get("n_iter", 0)),
                      "weight_decay": float(weight_decay), "grad_max": grad_max}
    return probe.to(feats.device)


def _check_probe_inputs(feats: torch.Tensor, labels: torch.Tensor, num_classes: int,
                        weight_decay: float) -> None:
    """:func:`fit_linear_probe`'s argument checks (ValueError naming what is wrong)."""
    if feats.dim() != 2 or feats.shape[0] != labels.shape[0] or feats.shape[0] == 0:
        raise ValueError(f"fit_linear_probe needs features (N, D) and N labels with N > 0, got "
                         f"{tuple(feats.shape)} and {tuple(labels.shape)}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay} is invalid: use a value >= 0")
    labels = labels.long()
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")


def _standardisation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The features' per-column mean and std (constant columns get std 1, so they stay 0)."""
    mu = x.mean(0)
    sd = x.std(0, unbiased=False)
    sd = torch.where(sd > 1e-6 * sd.max().clamp_min(1e-12), sd, torch.ones_like(sd))  # constant columns
    return mu, sd


def _initial_probe(init: Optional[nn.Linear], num_classes: int, mu: torch.Tensor, sd: torch.Tensor,
                   device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) in the standardised space to start L-BFGS from: zeros, or ``init`` carried over."""
    weight = torch.zeros(num_classes, mu.shape[0], device=device, dtype=dtype)
    bias = torch.zeros(num_classes, device=device, dtype=dtype)
    if init is not None:  # raw-space (W, b) -> standardised space: W' = W * sd, b' = b + W @ mu
        w0 = init.weight.detach().to(device=device, dtype=dtype)
        weight = w0 * sd
        bias = init.bias.detach().to(device=device, dtype=dtype) + w0 @ mu
    return weight, bias


def _raw_space_probe(weight: torch.Tensor, bias: torch.Tensor, mu: torch.Tensor,
                     sd: torch.Tensor) -> nn.Linear:
    """The fitted standardised-space (W, b) as a float32 ``nn.Linear`` on raw features."""
    with torch.no_grad():
        w_raw = weight / sd
        b_raw = bias - w_raw @ mu
    probe = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        probe.weight.copy_(w_raw.float())
        probe.bias.copy_(b_raw.float())
    return probe


def probe_logits(probe: nn.Linear, feats: torch.Tensor) -> torch.Tensor:
    """The probe's logits for ``feats`` (computed where the probe lives, returned on CPU)."""
    with torch.no_grad():
        dev = probe.weight.device
        return probe(feats.to(dev, probe.weight.dtype)).cpu()


# ---- the linear protocol ----------------------------------------------------------------
def _state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _changed_keys(module: nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    now = module.state_dict()
    return sorted(k for k, v in before.items()
                  if k not in now or not torch.equal(now[k].detach().cpu(), v))


def best_on_validation(rows: Sequence[dict], key: str) -> dict:
    """The row with the best ``val_top1``; ties go to the larger ``row[key]``.

    The one selection rule of the study (the probe's weight decay, fine-tuning's encoder lr scale):
    it reads validation accuracy only, so a test figure in a row cannot steer it.
    """
    if not rows:
        raise ValueError("best_on_validation needs at least one row")
    return max(rows, key=lambda r: (r["val_top1"], r[key]))


def linear_eval(cfg: LinearEvalConfig, out_dir: Union[str, Path]) -> dict:
    """Run the linear classification protocol for ``cfg.encoder`` and write the run folder.

    A finished folder (``result.json`` with the same config fingerprint) is returned as it is; a
    folder holding another config raises :class:`simpleclr.runs.rundir.RunConflict`.
    """
    from . import launch

    t0 = time.perf_counter()

    def here(run: "RunDir") -> dict:
        with run.lock():
            return _linear_eval(cfg, run, t0)

    return launch.run_stage(cfg, out_dir, here)


def _linear_eval(cfg: LinearEvalConfig, run: "RunDir", t0: float) -> dict:
    """:func:`linear_eval`'s work, with the run folder's lock held."""
    from .. import data
    from .models import SimCLRNet, load_encoder, load_projection_head, source_name, uses_standin

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
    before = _state_copy(encoder)
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
    from .. import data

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
    changed = _changed_keys(encoder, before)
    if changed:
        raise RuntimeError(f"linear_eval changed frozen encoder weights/buffers ({', '.join(changed[:5])}"
                           f"{' ...' if len(changed) > 5 else ''}): this is a bug, please report it")


def _save_test_features(cfg: LinearEvalConfig, run: "RunDir", test_feats: torch.Tensor,
                        test: "data_mod.Split", encoder_source: str) -> None:
    """features.pt: the test split's features (float16) and labels, for the report's t-SNE."""
    from ..runs.rundir import atomic_torch_save

    atomic_torch_save({"features": test_feats.half(), "labels": test.labels.clone(),
                       "coarse_labels": None if test.coarse_labels is None
                       else test.coarse_labels.clone(),
                       "classes": list(test.classes),
                       "coarse_classes": None if test.coarse_classes is None
                       else list(test.coarse_classes),
                       "encoder": cfg.encoder, "encoder_source": encoder_source},
                      run.features_path)


def save_test_predictions(run: "RunDir", logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Write the run's per-image test predictions (:mod:`simpleclr.runs.predictions`), which the
    report's paired tests read; returns the fields result.json records about them."""
    from ..runs import predictions

    return predictions.save_predictions(run.path / predictions.PREDICTIONS,
                                        predictions.from_logits(logits, labels))


def linear_eval_on_one_rank(cfg: LinearEvalConfig, out_dir: Union[str, Path]) -> dict:
    """:func:`linear_eval` under torchrun: rank 0 evaluates (features of a frozen encoder and an
    L-BFGS probe take minutes, so sharding would save little), the other ranks wait for it and
    return the same result; when rank 0 fails, they raise
    :class:`~simpleclr.training.distributed.MainRankFailed` with its error's line (rank 0 raises its own)
    instead of waiting for it. Outside torchrun it is :func:`linear_eval`."""
    from . import distributed
    from ..runs.rundir import RunDir

    world = distributed.init_from_env()  # gloo is enough for one small broadcast
    if not world.distributed:
        return linear_eval(cfg, out_dir)
    result = distributed.on_main(world, lambda: linear_eval(cfg, out_dir), "linear_eval")
    return result if result is not None else (RunDir(out_dir).read_result() or {})
