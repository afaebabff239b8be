"""Data-parallel helpers for runs launched by ``torchrun`` (NCCL on GPUs, gloo on CPU).

One process per device. Without torchrun's environment (``WORLD_SIZE`` unset) everything here
degrades to the single-process case, so the training loops call these functions unconditionally.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_from_env(device: Optional[torch.device] = None) -> World:
    """Join the process group torchrun described in the environment (once); else world size 1."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return World(rank=rank, size=size, local_rank=local_rank)


def current_world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(rank=dist.get_rank(), size=dist.get_world_size(),
                     local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    return World()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice.

    Every rank computes the same loss over the gathered global batch, so the gradient reaching
    rank r's embeddings is the sum over ranks of dL/dz_r; DDP's gradient *mean* then restores exactly
    the single-process gradient. (Returning only the local gradient, as several public SimCLR
    implementations did, scales gradients by 1/world_size.) all_reduce is used rather than
    reduce_scatter because gloo lacks the latter.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n:(dist.get_rank() + 1) * n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, keeping gradients (identity on one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def shard(indices: torch.Tensor, world: World, batch_size: int) -> torch.Tensor:
    """This rank's part of a global, already permuted epoch order.

    The order is cut into global batches of ``batch_size`` (the incomplete last batch dropped, as
    single-process training does), and each global batch is split into ``world.size`` contiguous
    per-rank slices, so rank r's k-th local batch is exactly its slice of the k-th global batch.
    """
    if batch_size % world.size:
        raise ValueError(f"batch_size={batch_size} is not divisible by world size {world.size}: "
                         "choose a global batch size that is a multiple of the number of processes")
    steps = len(indices) // batch_size
    per = batch_size // world.size
    batches = indices[: steps * batch_size].view(steps, world.size, per)
    return batches[:, world.rank].reshape(-1)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (a copy; identity on one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
