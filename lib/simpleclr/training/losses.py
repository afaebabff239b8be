"""NT-Xent, the SimCLR contrastive loss (Chen et al., 2020), computed stably in float32.

Row ``i`` of ``z1`` and row ``i`` of ``z2`` are two views of one image. Every view's denominator
holds the ``2N - 1`` other views of the batch; with DDP the caller passes the globally gathered
``z1``, ``z2`` and nothing here changes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["nt_xent"]


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
