"""What every self-supervised method shares: :class:`Method`, the objective the trainer runs
(:class:`simpleclr.training.trainer.Objective`) as one ``nn.Module`` holding the encoder, the heads
and any per-step state (a target network, a queue), so checkpoints hold all of it; the two-view
augmentation each method configures; and the small pieces several methods use (an MLP head, the
EMA update with its tau schedule).
"""
from __future__ import annotations

import copy
import math
from typing import Any, ClassVar, Optional, Sequence

import torch
from torch import nn

from ..parts import augment as augment_mod
from ..trainer import Objective

__all__ = ["Method", "mlp", "ema_update", "cosine_tau", "pair_augment", "per_view", "size_rule",
           "target_copy", "symmetric_views", "asymmetric_views"]


def size_rule(image_size: int, small: float, large: float) -> float:
    """A probability that depends on the image size: ``small`` below 64 px (the CIFAR recipes: a
    blur of a 32-px image wipes it out), ``large`` from 64 px (the ImageNet recipes)."""
    return small if image_size < 64 else large


def pair_augment(cfg: Any, image_size: int, mean: Sequence[float], std: Sequence[float],
                 blur: tuple[float, float], solarize: tuple[float, float] = (0.0, 0.0)
                 ) -> "augment_mod.SimCLRAugment":
    """The two views' distribution: crop, flip, colour jitter and grayscale alike for both views
    (``cfg.crop_scale_min``, ``cfg.jitter_strength``, ``cfg.jitter_saturation``), blur and
    solarization per view."""
    return augment_mod.SimCLRAugment(image_size, mean, std, scale=(cfg.crop_scale_min, 1.0),
                                     jitter_strength=cfg.jitter_strength,
                                     saturation=getattr(cfg, "jitter_saturation", None), blur_prob=blur,
                                     solarize_prob=solarize)


def symmetric_views(cfg: Any, image_size: int, mean: Sequence[float], std: Sequence[float],
                    large_blur: float = 0.5) -> "augment_mod.SimCLRAugment":
    """Two views from one distribution (SimCLR's, solo-learn's symmetric_weak.yaml): blur off below
    64 px and ``large_blur`` from 64 px unless ``cfg.blur_prob`` says, ``cfg.solarize_prob`` both."""
    blur = size_rule(image_size, 0.0, large_blur) if cfg.blur_prob is None else cfg.blur_prob
    return pair_augment(cfg, image_size, mean, std, (blur, blur), (cfg.solarize_prob, cfg.solarize_prob))


def asymmetric_views(cfg: Any, image_size: int, mean: Sequence[float],
                     std: Sequence[float]) -> "augment_mod.SimCLRAugment":
    """BYOL's asymmetric pair: blur (1.0, 0.1) from 64 px (solo-learn's imagenet-100
    asymmetric.yaml) and none below (its CIFAR asymmetric.yaml) unless ``cfg.blur_prob`` says (both
    views then), view 2 alone solarized."""
    blur = (size_rule(image_size, 0.0, 1.0), size_rule(image_size, 0.0, 0.1))
    blur = blur if cfg.blur_prob is None else (cfg.blur_prob, cfg.blur_prob)
    return pair_augment(cfg, image_size, mean, std, blur, (0.0, cfg.solarize_prob))


def mlp(dims: Sequence[int], *, bn: bool = True) -> nn.Sequential:
    """Linear-(BN)-ReLU blocks through ``dims``, ending in a plain Linear: solo-learn's projectors
    and predictors (BYOL, Barlow Twins, VICReg; MoCo's without BN)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers += ([nn.BatchNorm1d(b)] if bn else []) + [nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def per_view(net: Any, x: torch.Tensor) -> torch.Tensor:
    """``net`` over each view of the stacked pair ``x`` (rows [0, B) view 1, [B, 2B) view 2) on its
    own, the outputs stacked the same way: batch norm then normalises each view by its own
    statistics, as solo-learn forwards its views one at a time (SimCLR, whose reference code
    normalises both views together, does not use this)."""
    return torch.cat([net(v) for v in x.chunk(2)])


def cosine_tau(step: int, total_steps: int, base: float, final: float) -> float:
    """BYOL's EMA coefficient at step ``step`` (0-based) of ``total_steps``: ``base`` at the first
    step, rising along a half cosine to ``final`` at the end (solo-learn's ``MomentumUpdater``)."""
    return final - (final - base) * (math.cos(math.pi * step / max(1, total_steps)) + 1) / 2


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``target <- tau * target + (1 - tau) * online``, parameter by parameter; buffers (BN
    statistics) are the target's own."""
    t = [p for p in target.parameters()]
    o = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(t, tau)
    torch._foreach_add_(t, o, alpha=1.0 - tau)


def target_copy(online: nn.Module) -> nn.Module:
    """A frozen copy of ``online`` for a target network: it starts equal and never gets a gradient."""
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return target


class Method(nn.Module, Objective):
    """A self-supervised method: ``encoder`` plus its heads, its loss, its views and its per-step
    extras. Subclasses set ``name`` and ``FIELDS`` (the PretrainConfig fields it reads beyond the
    shared ones) and implement ``forward`` (the 2B views -> what ``loss`` needs) and ``loss``.
    ``STATIC_LR``: submodules whose lr stays at the base value, outside the schedule."""

    name: ClassVar[str] = "method"
    STATIC_LR: ClassVar[tuple[str, ...]] = ()

    def __init__(self, encoder: nn.Module, augment: "augment_mod.SimCLRAugment") -> None:
        super().__init__()
        self.encoder = encoder
        self.augment = augment

    def views(self, images: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Both views of every image, stacked: rows [0, B) view 1, [B, 2B) view 2."""
        v1, v2 = self.augment.two_views(images, generator)
        return torch.cat([v1, v2])

    def heads(self) -> dict[str, dict]:
        """The heads' weights the final checkpoint keeps beside the encoder's (SimCLR's ``head``
        serves the projection probe); none by default."""
        return {}
