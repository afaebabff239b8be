"""VICReg (Bardes et al., 2022): invariance (the MSE between the two views' projections), variance
(a hinge keeping each dimension's standard deviation at 1 or more) and covariance (off-diagonal
covariances to 0), each view regularised on its own.

Recipe (solo-learn scripts/pretrain/cifar/vicreg.yaml; values in config.METHOD_RECIPES): LARS lr
0.3 x B/256 (eta 0.02, lr clipping), weight decay 1e-4, projector 512-2048-2048-2048, weights
25 / 25 / 1; its own views: crop scale from 0.2, no blur, solarization p=0.1 on both views.

The variance and covariance terms are solo-learn's (and the paper's code): the sum of the two
views' terms, where lightly's ``VICRegLoss`` averages them (half the weight); the tests check the
difference. All three terms are over the global batch (gathered with the gradient), as the
official code gathers before the variance and covariance.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..parts import distributed
from ..trainer import loss_input
from .base import Method, mlp, per_view, symmetric_views

__all__ = ["VICReg", "vicreg_loss"]


def _variance(z: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - torch.sqrt(z.var(dim=0) + 1e-4)).mean()


def _covariance(z: torch.Tensor) -> torch.Tensor:
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (n - 1)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim: float, var: float, cov: float) -> torch.Tensor:
    """``sim * MSE(z1, z2) + var * (v(z1) + v(z2)) + cov * (c(z1) + c(z2))`` (solo-learn's sum over
    the views): v the mean hinge ``relu(1 - sqrt(Var + 1e-4))`` per dimension, c the sum of squared
    off-diagonal covariances (unbiased) over the dimension count."""
    return (sim * F.mse_loss(z1, z2) + var * (_variance(z1) + _variance(z2))
            + cov * (_covariance(z1) + _covariance(z2)))


class VICReg(Method):
    """Encoder -> projector; invariance, variance and covariance terms on the projections."""

    name = "vicreg"

    def __init__(self, cfg: Any, encoder: nn.Module, image_size: int, mean: Any, std: Any) -> None:
        # vicreg.yaml's own views: no blur at any size, solarization on both
        super().__init__(encoder, symmetric_views(cfg, image_size, mean, std, large_blur=0.0))
        self.projector = mlp([encoder.feature_dim, cfg.proj_hidden, cfg.proj_hidden, cfg.proj_out])
        self.weights = (cfg.vicreg_sim, cfg.vicreg_var, cfg.vicreg_cov)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_view(lambda v: self.projector(self.encoder(v)), x)

    def loss(self, out: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        z1, z2 = loss_input(out).chunk(2)
        return vicreg_loss(distributed.gather_with_grad(z1), distributed.gather_with_grad(z2), *self.weights)
