"""Barlow Twins (Zbontar et al., 2021): the cross-correlation of the two views' standardised
projections is pulled to the identity: its diagonal to 1 (invariance), the rest to 0 (redundancy).

Recipe (solo-learn scripts/pretrain/cifar/barlow.yaml; values in config.METHOD_RECIPES): LARS lr
0.3 x B/256 (eta 0.02, lr clipping), weight decay 1e-4, projector 512-2048-2048-2048, lambda
0.0051, loss scale 0.1. Views: asymmetric.yaml (view 2 solarized with p=0.2; blur off below 64 px,
BYOL's ImageNet (1.0, 0.1) from 64 px).

The batch statistics and the cross-correlation are over the global batch: the projections are
gathered with their gradient (:func:`~simpleclr.training.parts.distributed.gather_with_grad`), so
several processes compute one process's loss and, after DDP's mean, its gradient. (solo-learn
standardises per process and all-reduces the matrix without a gradient path; lightly's #1977
fixed the same gradient.)
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from ..parts import distributed
from ..trainer import loss_input
from .base import Method, asymmetric_views, mlp, per_view

__all__ = ["BarlowTwins", "barlow_loss"]


def barlow_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float, scale: float) -> torch.Tensor:
    """``scale * (sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2)`` where C is the cross-
    correlation of ``z1`` and ``z2`` (N, D), each standardised per dimension over the batch (the
    biased variance and eps 1e-5 of a BatchNorm1d without affine parameters)."""
    n, d = z1.shape

    def standardise(z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)

    c = standardise(z1).T @ standardise(z2) / n
    eye = torch.eye(d, dtype=torch.bool, device=c.device)
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = c[~eye].pow(2).sum()
    return scale * (on + lambd * off)


class BarlowTwins(Method):
    """Encoder -> projector; the cross-correlation of the two views' projections to the identity."""

    name = "barlow"

    def __init__(self, cfg: Any, encoder: nn.Module, image_size: int, mean: Any, std: Any) -> None:
        super().__init__(encoder, asymmetric_views(cfg, image_size, mean, std))
        self.projector = mlp([encoder.feature_dim, cfg.proj_hidden, cfg.proj_hidden, cfg.proj_out])
        self.lambd, self.scale = cfg.barlow_lambda, cfg.barlow_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_view(lambda v: self.projector(self.encoder(v)), x)

    def loss(self, out: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        z1, z2 = loss_input(out).chunk(2)
        return barlow_loss(distributed.gather_with_grad(z1), distributed.gather_with_grad(z2),
                           self.lambd, self.scale)
