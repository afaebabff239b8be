"""MoCo v2+ (Chen et al., 2020, "Improved Baselines with Momentum Contrastive Learning", with
solo-learn's symmetric loss): a query encoder and projector, a momentum (EMA) copy of both that
makes the keys, and a first-in first-out queue of past keys as the negatives.

Recipe (solo-learn scripts/pretrain/cifar/mocov2plus.yaml; values in config.METHOD_RECIPES): SGD
lr 0.3 x B/256, weight decay 1e-4, projector 512-2048-256 without BN, temperature 0.2, a queue of
32768 keys per view, tau 0.99 -> 0.999 along a half cosine. Views: symmetric_weak.yaml (blur off
below 64 px here, as in solo-learn's 2021 CIFAR scripts; 0.5 from 64 px).

Under several processes each rank's loss is over its own queries (DDP averages them into the
global mean) and the queue takes the keys of every rank, gathered in rank order: the same queue,
the same loss and the same gradient as one process on the global batch.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..parts import distributed
from ..trainer import loss_input
from .base import Method, cosine_tau, ema_update, mlp, per_view, symmetric_views, target_copy

__all__ = ["MoCoV2", "moco_loss"]


def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of queries ``q`` (N, D) with their keys ``k`` (N, D) as positives and the ``queue``
    (D, K) columns as negatives, all L2-normalised here; the mean over the N queries."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


class MoCoV2(Method):
    """MoCo v2+: the query path trains, the key path is its EMA, the queue holds past keys."""

    name = "mocov2"

    def __init__(self, cfg: Any, encoder: nn.Module, image_size: int, mean: Any, std: Any) -> None:
        super().__init__(encoder, symmetric_views(cfg, image_size, mean, std))
        self.projector = mlp([encoder.feature_dim, cfg.proj_hidden, cfg.proj_out], bn=False)
        self.target_encoder, self.target_projector = target_copy(encoder), target_copy(self.projector)
        self.temperature, self.tau = cfg.temperature, (cfg.tau_base, cfg.tau_final)
        # one queue per view (keys of view 1 serve view 2's queries and back), unit columns
        self.register_buffer("queue", F.normalize(torch.randn(2, cfg.proj_out, cfg.queue_size), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.pending: Optional[torch.Tensor] = None  # this step's gathered keys, queued after the step

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = per_view(lambda v: self.projector(self.encoder(v)), x)
        with torch.no_grad():
            k = per_view(lambda v: self.target_projector(self.target_encoder(v)), x)
        return q, k

    def loss(self, out: tuple[torch.Tensor, torch.Tensor], labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        (q1, q2), (k1, k2) = loss_input(out[0]).chunk(2), loss_input(out[1]).chunk(2)
        queue = self.queue.clone().to(q1.dtype)  # this step's negatives: keys of earlier steps only
        loss = (moco_loss(q1, k2, queue[1], self.temperature) + moco_loss(q2, k1, queue[0], self.temperature)) / 2
        keys = torch.stack([distributed.gather_with_grad(k1), distributed.gather_with_grad(k2)])
        self.pending = F.normalize(keys.detach(), dim=2)
        return loss

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        tau = cosine_tau(step, total_steps, *self.tau)
        ema_update(self.target_encoder, self.encoder, tau)
        ema_update(self.target_projector, self.projector, tau)
        if self.pending is not None:
            self.enqueue(self.pending)
            self.pending = None

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """First in, first out: ``keys`` (2, B, D) replace the oldest B columns of each queue."""
        size, ptr = self.queue.shape[2], int(self.queue_ptr)
        idx = (ptr + torch.arange(keys.shape[1], device=keys.device)) % size
        self.queue[:, :, idx] = keys.transpose(1, 2).to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + keys.shape[1]) % size)
