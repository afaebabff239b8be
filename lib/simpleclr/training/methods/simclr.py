"""SimCLR (Chen et al., 2020): a projection head on the encoder and the NT-Xent loss over the
(DDP-gathered) projections of two symmetric views.

The recipe is google-research/simclr's CIFAR one (``run.py --train_batch_size 512 --learning_rate
1.0 --weight_decay 1e-4 --temperature 0.5 --color_jitter_strength 0.5``; PretrainConfig's
defaults), not solo-learn's (temperature 0.2, lr 0.4, projector to 256): the study's SimCLR rows
are unchanged by the other methods' arrival. Blur: off below 64 px, p=0.5 from 64 px.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..parts import distributed
from ..parts.models import ProjectionHead
from ..trainer import loss_input
from .base import Method, symmetric_views

__all__ = ["SimCLR", "nt_xent"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean NT-Xent over the 2N views of ``z1`` (N, D) and ``z2`` (N, D); a scalar tensor.

    Embeddings are L2-normalised, cosine similarities divided by ``temperature`` are the logits,
    self-similarity is masked out and the positive sits at the paired index. Autocast is switched
    off inside and the arithmetic runs in float32 (float64 stays float64), so a bf16 forward pass
    gives the same loss as fp32 up to the precision of the embeddings themselves.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"nt_xent needs two (N, D) tensors of one shape; got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}: pass the projections of the two views, paired by row")
    if z1.shape[0] < 1 or z1.shape[1] < 1:
        raise ValueError(f"nt_xent needs at least one pair of non-empty embeddings; got {tuple(z1.shape)}")
    if not temperature > 0:
        raise ValueError(f"nt_xent temperature must be > 0; got {temperature}")
    n = z1.shape[0]
    dtype = torch.promote_types(torch.promote_types(z1.dtype, z2.dtype), torch.float32)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1, z2]).to(dtype), dim=1)
        logits = (z @ z.T) / temperature
        # Self-similarity never counts: -inf gives it zero weight in the softmax and zero gradient.
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        idx = torch.arange(n, device=z.device)
        targets = torch.cat([idx + n, idx])  # view i of z1 pairs with view i of z2 and back
        return F.cross_entropy(logits, targets)


class SimCLR(Method):
    """Encoder f, projection head g (Linear-BN-ReLU-Linear), NT-Xent on the gathered projections."""

    name = "simclr"
    FIELDS = ("temperature", "proj_hidden", "proj_out", "proj_bn")

    def __init__(self, cfg: Any, encoder: nn.Module, image_size: int, mean: Any, std: Any) -> None:
        super().__init__(encoder, symmetric_views(cfg, image_size, mean, std))
        self.head = ProjectionHead(encoder.feature_dim, cfg.proj_hidden, cfg.proj_out, cfg.proj_bn)
        self.temperature = cfg.temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def loss(self, out: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        z1, z2 = loss_input(out).chunk(2)
        return nt_xent(distributed.gather_with_grad(z1), distributed.gather_with_grad(z2), self.temperature)

    def heads(self) -> dict[str, dict]:
        return {"head": {k: v.detach().cpu() for k, v in self.head.state_dict().items()}}
