"""Optimizers and learning-rate schedules for the training stages.

* :class:`LARS` is SimCLR's optimizer (You et al. 2017 as used by Chen et al. 2020): momentum SGD
  whose step for each weight tensor is scaled by the trust ratio ``eta * ||w|| / ||g||``. Biases and
  normalisation parameters (every 1-D tensor) get neither weight decay nor the trust ratio; this is
  carried by the param groups' ``weight_decay`` and ``lars_adapt`` entries, not by names.
* :func:`build_optimizer` builds LARS, SGD or AdamW with that same decay / no-decay grouping, and a
  separate learning rate for a classifier's encoder when fine-tuning (``cfg.encoder_lr_scale``).
* :func:`warmup_cosine` is the schedule factor, meant to be stepped **every iteration** through a
  :class:`torch.optim.lr_scheduler.LambdaLR` over the run's total iterations
  (:func:`warmup_cosine_scheduler`); stepping it per epoch is a known mistake of public SimCLR code.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Optional

import torch
from torch import nn

if TYPE_CHECKING:
    from ...config import TrainingConfig

__all__ = ["LARS", "build_optimizer", "param_groups", "scaled_lr", "warmup_cosine",
           "warmup_cosine_scheduler"]


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling as in SimCLR's reference implementation.

    For each tensor ``w`` with gradient ``g`` (and group options ``lr``, ``momentum``,
    ``weight_decay``, ``lars_adapt``)::

        g     <- g + weight_decay * w
        ratio <- eta * ||w|| / ||g||   if lars_adapt and both norms > 0, else 1
        v     <- momentum * v + rate * g   rate = lr * ratio; with clip, min(ratio, lr)
        w     <- w - v                   (nesterov: w - (momentum * v + rate * g))

    ``clip`` is solo-learn's ``clip_lars_lr`` (NVIDIA's LARC in clip mode): the layer's rate is the
    trust ratio itself, capped at the scheduled ``lr``, so a layer whose ratio is below ``lr``
    steps by its ratio whatever the schedule says. Without it the trust ratio scales ``lr``
    (SimCLR). The learning rate sits inside the momentum buffer, exactly like SimCLR's TensorFlow
    code, so a warm-up changes the step size smoothly (solo-learn multiplies the buffer by the
    current lr instead: the two differ only while lr changes, by the ratio of this step's lr to
    earlier steps'); the trust ratio's denominator is ``||g + wd * w||`` (SimCLR's; solo-learn
    uses ``||g|| + wd * ||w||``, equal when the decay is small against the gradient).
    """

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.9,
                 weight_decay: float = 0.0, eta: float = 0.001, nesterov: bool = False,
                 lars_adapt: bool = True, clip: bool = False):
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(f"LARS needs lr, momentum, weight_decay >= 0 and eta > 0; got "
                             f"lr={lr}, momentum={momentum}, weight_decay={weight_decay}, eta={eta}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                        nesterov=nesterov, lars_adapt=lars_adapt, clip=clip)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Optional[Any] = None) -> Optional[torch.Tensor]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("LARS does not support sparse gradients")
            self._update(params, group)
        return loss

    def _update(self, params: list[torch.Tensor], group: dict) -> None:
        """One group's update with multi-tensor ops (a few kernels per group, not per tensor)."""
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        grads = [p.grad for p in params]
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if group["lars_adapt"]:
            w_norm = torch.stack(torch._foreach_norm(params))
            g_norm = torch.stack(torch._foreach_norm(grads))
            ratio = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm,
                                torch.ones_like(w_norm))
            rate = torch.clamp(ratio, max=lr) if group.get("clip") else ratio * lr
            scaled = torch._foreach_mul(grads, list(rate.unbind()))
        else:
            scaled = torch._foreach_mul(grads, lr)
        bufs = []
        for p, s in zip(params, scaled):
            state = self.state[p]
            if "momentum_buffer" not in state:  # v starts at 0, so the first v is the step itself
                state["momentum_buffer"] = torch.zeros_like(p)
            bufs.append(state["momentum_buffer"])
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, scaled)
        if group["nesterov"]:
            torch._foreach_add_(scaled, bufs, alpha=momentum)
            torch._foreach_sub_(params, scaled)
        else:
            torch._foreach_sub_(params, bufs)


def _is_no_decay(param: torch.Tensor) -> bool:
    """Biases and norm-layer scales/shifts: every tensor with fewer than two dimensions."""
    return param.ndim <= 1


def _encoder_param_ids(model: nn.Module) -> set[int]:
    encoder = getattr(model, "encoder", None)
    return {id(p) for p in encoder.parameters()} if isinstance(encoder, nn.Module) else set()


def _static_param_ids(model: nn.Module) -> set[int]:
    """The parameters of the submodules a method names in ``STATIC_LR`` (SimSiam's predictor)."""
    return {id(p) for name in getattr(model, "STATIC_LR", ()) for p in getattr(model, name).parameters()}


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 encoder_lr_scale: float = 1.0) -> list[dict]:
    """Split trainable parameters into decay / no-decay groups (and encoder / rest when the model
    has an ``encoder`` attribute and ``encoder_lr_scale != 1``; and "static", whose lr the schedule
    leaves at its base value, for the submodules a method names in ``STATIC_LR``).

    Each group carries ``name``, ``lr``, ``weight_decay`` and ``lars_adapt`` (False for no-decay
    groups); empty groups and frozen parameters (``requires_grad=False``) are left out.
    """
    split_encoder = encoder_lr_scale != 1.0
    enc_ids = _encoder_param_ids(model) if split_encoder else set()
    static_ids = _static_param_ids(model)
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        part = "encoder" if id(p) in enc_ids else "static" if id(p) in static_ids else "model"
        buckets.setdefault((part, _is_no_decay(p)), []).append(p)
    groups = []
    for (part, no_decay), params in sorted(buckets.items()):
        groups.append({
            "name": f"{part}/{'no_decay' if no_decay else 'decay'}",
            "params": params,
            "lr": lr * (encoder_lr_scale if part == "encoder" else 1.0),
            "weight_decay": 0.0 if no_decay else weight_decay,
            "lars_adapt": not no_decay,
        })
    return groups


def build_optimizer(model: nn.Module, cfg: "TrainingConfig", lr: float) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` ("lars", "sgd" or "adamw") over ``model``'s trainable parameters.

    Reads ``cfg.weight_decay``, ``cfg.momentum`` and, where the config has them (supervised training
    does, SimCLR does not), ``cfg.nesterov`` and ``cfg.encoder_lr_scale`` (fine-tuning: the encoder's
    lr is ``lr * encoder_lr_scale``). Biases and norm parameters are never decayed, whatever the
    optimizer.
    """
    groups = param_groups(model, lr, cfg.weight_decay, getattr(cfg, "encoder_lr_scale", 1.0))
    if not groups:
        raise ValueError("the model has no trainable parameters: unfreeze something to train")
    nesterov = bool(getattr(cfg, "nesterov", False)) and cfg.momentum > 0
    if cfg.optimizer == "lars":  # a method's recipe may set the trust coefficient and clipping
        eta = getattr(cfg, "lars_eta", None)
        return LARS(groups, lr=lr, momentum=cfg.momentum, nesterov=nesterov,
                    eta=0.001 if eta is None else eta, clip=bool(getattr(cfg, "lars_clip", False)))
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=nesterov)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"optimizer={cfg.optimizer!r} is unknown: use one of lars, sgd, adamw")


def scaled_lr(base_lr: float, batch_size: int, rule: str) -> float:
    """The learning rate for ``batch_size``: "linear" base*B/256, "sqrt" base*sqrt(B), "none" base."""
    if rule == "linear":
        return base_lr * batch_size / 256.0
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size)
    if rule == "none":
        return base_lr
    raise ValueError(f"lr scaling rule {rule!r} is unknown: use linear, sqrt or none")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """The lr factor at iteration ``step`` (0-based): linear warm-up then cosine decay to 0.

    During warm-up the factor is ``(step + 1) / warmup_steps`` (so the first step already moves and
    the last warm-up step reaches 1); afterwards ``0.5 * (1 + cos(pi * t))`` with ``t`` going from 0
    at ``warmup_steps`` to 1 at ``total_steps``. Steps at or past the end give 0.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps={total_steps} must be >= 1")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps={warmup_steps} must lie in [0, total_steps={total_steps}]")
    if step >= total_steps:
        return 0.0
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * t))


class _WarmupCosine:
    """A picklable schedule factor (LambdaLR saves callable objects' ``__dict__`` in its state)."""

    def __init__(self, total_steps: int, warmup_steps: int):
        warmup_cosine(0, total_steps, warmup_steps)  # validate now, not at the first step
        self.total_steps, self.warmup_steps = total_steps, warmup_steps

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, self.total_steps, self.warmup_steps)


class _Static:
    """The factor of a group the schedule leaves alone (picklable, as LambdaLR needs)."""

    def __call__(self, step: int) -> float:
        return 1.0


def warmup_cosine_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                            warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying :func:`warmup_cosine` to every group's lr but the "static/" ones, which
    keep their base lr; call ``.step()`` per iteration."""
    factor = _WarmupCosine(total_steps, warmup_steps)
    if not any(str(g.get("name", "")).startswith("static/") for g in optimizer.param_groups):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [
        _Static() if str(g.get("name", "")).startswith("static/") else factor for g in optimizer.param_groups])

