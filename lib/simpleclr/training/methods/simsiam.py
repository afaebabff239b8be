"""SimSiam (Chen & He, 2021): one network, a predictor, and a stop-gradient on the other view's
projection; no negatives, no target network.

Recipe (solo-learn scripts/pretrain/cifar/simsiam.yaml; values in config.METHOD_RECIPES): SGD lr
0.5 x B/256, weight decay 1e-5, projector 512-2048-2048-2048 ending in a BN without affine
parameters, predictor 2048-512-2048, whose lr stays at its base value, outside the warm-up and
cosine schedule (solo-learn's ``static_lr``, as the paper fixes it). No ``zero_init_residual``
(today's yaml; its 2021 scripts set it). Views: symmetric_weak.yaml (blur off below 64 px, as in
the 2021 scripts; 0.5 from 64 px).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..trainer import loss_input
from .base import Method, per_view, symmetric_views

__all__ = ["SimSiam", "simsiam_loss"]


def simsiam_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-cos(p, stopgrad(z)), the mean over rows."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


class SimSiam(Method):
    """Encoder -> projector -> predictor; each view's prediction meets the other's projection."""

    name = "simsiam"
    STATIC_LR = ("predictor",)

    def __init__(self, cfg: Any, encoder: nn.Module, image_size: int, mean: Any, std: Any) -> None:
        super().__init__(encoder, symmetric_views(cfg, image_size, mean, std))
        d, h, o = encoder.feature_dim, cfg.proj_hidden, cfg.proj_out
        self.projector = nn.Sequential(
            nn.Linear(d, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True),
            nn.Linear(h, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True),
            nn.Linear(h, o), nn.BatchNorm1d(o, affine=False))
        self.predictor = nn.Sequential(
            nn.Linear(o, cfg.pred_hidden, bias=False), nn.BatchNorm1d(cfg.pred_hidden), nn.ReLU(inplace=True),
            nn.Linear(cfg.pred_hidden, o))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = per_view(lambda v: self.projector(self.encoder(v)), x)
        return per_view(self.predictor, z), z

    def loss(self, out: tuple[torch.Tensor, torch.Tensor], labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        (p1, p2), (z1, z2) = loss_input(out[0]).chunk(2), loss_input(out[1]).chunk(2)
        return simsiam_loss(p1, z2) / 2 + simsiam_loss(p2, z1) / 2
