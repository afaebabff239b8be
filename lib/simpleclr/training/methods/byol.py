"""BYOL (Grill et al., 2020): an online encoder, projector and predictor learn to predict a target
network's projection of the other view; the target is the online network's EMA, never trained.

Recipe (solo-learn scripts/pretrain/cifar/byol.yaml; values in config.METHOD_RECIPES): LARS lr 1.0
x B/256 (eta 0.02, lr clipping, biases and norms excluded), weight decay 1e-5, projector and
predictor 4096 wide to 256, tau 0.99 -> 1.0 along a half cosine. Views: asymmetric.yaml, view 2
solarized with p=0.2; blur off below 64 px, BYOL's ImageNet (1.0, 0.1) from 64 px.

The loss is per image, so each rank's mean over its images, averaged by DDP, is the global mean:
equal to one process on the global batch (with global BN in the heads, the pretraining default).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..trainer import loss_input
from .base import Method, asymmetric_views, cosine_tau, ema_update, mlp, per_view, target_copy

__all__ = ["BYOL", "byol_loss"]


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p, z), the mean over rows (the normalised MSE of the paper); ``z`` is detached."""
    return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1).mean()


class BYOL(Method):
    """Online encoder -> projector -> predictor, regressed onto the EMA target's projection."""

    name = "byol"

    def __init__(self, cfg: Any, encoder: nn.Module, image_size: int, mean: Any, std: Any) -> None:
        super().__init__(encoder, asymmetric_views(cfg, image_size, mean, std))
        self.projector = mlp([encoder.feature_dim, cfg.proj_hidden, cfg.proj_out])
        self.predictor = mlp([cfg.proj_out, cfg.pred_hidden, cfg.proj_out])
        self.target_encoder, self.target_projector = target_copy(encoder), target_copy(self.projector)
        self.tau = (cfg.tau_base, cfg.tau_final)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = per_view(lambda v: self.predictor(self.projector(self.encoder(v))), x)
        with torch.no_grad():
            z = per_view(lambda v: self.target_projector(self.target_encoder(v)), x)
        return p, z

    def loss(self, out: tuple[torch.Tensor, torch.Tensor], labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        (p1, p2), (z1, z2) = loss_input(out[0]).chunk(2), loss_input(out[1]).chunk(2)
        return byol_loss(p1, z2) + byol_loss(p2, z1)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        tau = cosine_tau(step, total_steps, *self.tau)
        ema_update(self.target_encoder, self.encoder, tau)
        ema_update(self.target_projector, self.projector, tau)
