"""Frozen-feature evaluation, the library the stages call: feature extraction, weighted kNN, top-k,
the linear probe, the one selection rule on validation, the test predictions a run keeps, and the
monitors a training run evaluates after each epoch (:class:`KnnMonitor`, :class:`Validation`).

The linear protocol (:mod:`simpleclr.training.stages.linear_eval`) runs the encoder once, in ``eval()`` mode and without
gradients, over un-augmented images; everything after that is a convex problem on fixed features:
multinomial logistic regression, its weight decay chosen on a validation split carved from train,
then refit on all of train and scored once on test.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .parts.augment import normalize
from .parts.device import Runtime, eval_mode

if TYPE_CHECKING:
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
def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def changed_keys(module: nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
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


def save_test_predictions(run: "RunDir", logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Write the run's per-image test predictions (:mod:`simpleclr.runs.predictions`), which the
    report's paired tests read; returns the fields result.json records about them."""
    from ..runs import predictions

    return predictions.save_predictions(run.path / predictions.PREDICTIONS,
                                        predictions.from_logits(logits, labels))


# ---- what a training run watches after each epoch ---------------------------------------------
class KnnMonitor:
    """Pretraining's watch: every ``every`` epochs and at the last, weighted kNN of the held-out
    ``queries`` against a fixed ``bank`` of training images (uint8, on the device), by ``encoder``'s
    features. Only for watching: nothing is chosen on it. ``active`` False (ranks but the first)
    returns nothing."""

    def __init__(self, encoder: nn.Module, bank: torch.Tensor, bank_labels: torch.Tensor,
                 queries: torch.Tensor, query_labels: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float], runtime: Runtime, *, every: int, k: int, temperature: float,
                 num_classes: int, active: bool = True) -> None:
        self.encoder, self.bank, self.bank_labels = encoder, bank, bank_labels
        self.queries, self.query_labels, self.mean, self.std = queries, query_labels, mean, std
        self.runtime, self.every, self.k, self.temperature = runtime, every, k, temperature
        self.num_classes, self.active = num_classes, active

    def __call__(self, epoch: int, last: bool) -> dict:
        if not ((epoch + 1) % self.every == 0 or last) or not self.active:
            return {}
        with eval_mode(self.encoder):
            bank = extract_features(self.encoder, self.bank, self.mean, self.std, self.runtime)
            queries = extract_features(self.encoder, self.queries, self.mean, self.std, self.runtime)
        return {"knn_top1": knn_top1(bank, self.bank_labels, queries, self.query_labels, k=self.k,
                                     temperature=self.temperature, num_classes=self.num_classes)}


def predict_logits(model: nn.Module, images: torch.Tensor, mean: Sequence[float],
                   std: Sequence[float], runtime: Runtime, size: Optional[int] = None) -> torch.Tensor:
    """A classifier's (``.encoder``, ``.fc``) CPU logits for uint8 images (resized to ``size`` when
    given), in eval mode, without augmentation: what validation and the final test read."""
    with eval_mode(model):
        feats = extract_features(model.encoder, images, mean, std, runtime, size=size)
        with torch.no_grad():
            logits = model.fc(feats.to(model.fc.weight.device, model.fc.weight.dtype))
    return logits.cpu()


class Validation:
    """Supervised training's watch: top-1 / top-5 of ``model`` (a classifier) on the validation
    images after every epoch. ``active`` False (ranks but the first) returns nothing."""

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 mean: Sequence[float], std: Sequence[float], runtime: Runtime,
                 size: Optional[int] = None, active: bool = True) -> None:
        self.model, self.images, self.labels, self.mean, self.std = model, images, labels, mean, std
        self.runtime, self.size, self.active = runtime, size, active

    def __call__(self, epoch: int, last: bool) -> dict:
        if not self.active:
            return {}
        logits = predict_logits(self.model, self.images, self.mean, self.std, self.runtime, self.size)
        acc = topk_accuracy(logits, self.labels.cpu(), ks=(1, 5))
        return {"val_top1": acc["top1"], "val_top5": acc["top5"]}
