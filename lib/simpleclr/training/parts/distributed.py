"""Data-parallel helpers for runs launched by ``torchrun`` (NCCL on GPUs, gloo on CPU).

One process per device. Without torchrun's environment (``WORLD_SIZE`` unset) everything here
degrades to the single-process case, so the training loops call these functions unconditionally.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Optional, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...errors import SimpleCLRError, one_line

T = TypeVar("T")

# Ranks wait in a collective while rank 0 alone runs the kNN monitor, the final test pass or a
# whole linear evaluation; NCCL's 10-minute default would abort a long one.
TIMEOUT = timedelta(minutes=int(os.environ.get("SIMPLECLR_DIST_TIMEOUT_MIN", "60")))


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


def launched() -> bool:
    """Whether a launcher (torchrun) started this process as one rank of a job."""
    return "RANK" in os.environ and "MASTER_ADDR" in os.environ


def init_from_env(device: Optional[torch.device] = None) -> World:
    """Join the process group torchrun described in the environment (once); else world size 1.

    NCCL for CUDA devices, gloo otherwise. A world of one process (``torchrun --nproc-per-node 1``)
    still joins, so the NCCL/gloo path itself runs; the helpers below then act as identities.
    """
    if not launched():
        return current_world()
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    return World(rank=rank, size=size, local_rank=local_rank)


def shutdown() -> None:
    """Leave the process group (at the end of a torchrun-launched command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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


def _distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, keeping gradients (identity on one process)."""
    if not _distributed():
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
    if not _distributed():
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def from_main(value: int, device: Optional[torch.device] = None) -> int:
    """Rank 0's integer ``value`` on every rank (identity on one process): how rank 0 tells the
    others about something only it did, such as taking the run folder's lock."""
    if not _distributed():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def text_from_main(text: Optional[str], device: Optional[torch.device] = None) -> Optional[str]:
    """Rank 0's ``text`` (or None) on every rank (identity on one process): :func:`from_main` for
    a message, its UTF-8 bytes after their length."""
    if not _distributed():
        return text
    data = b"" if text is None else text.encode("utf-8")
    n = from_main(-1 if text is None else len(data), device)
    if n <= 0:
        return None if n < 0 else ""
    buf = (torch.tensor(list(data), dtype=torch.uint8, device=device) if dist.get_rank() == 0
           else torch.empty(n, dtype=torch.uint8, device=device))
    dist.broadcast(buf, src=0)
    return bytes(buf.cpu().tolist()).decode("utf-8")


class MainRankFailed(SimpleCLRError, RuntimeError):
    """Raised on the other ranks when rank 0 failed in work only it does (rank 0 raises its own
    error, and its output says more)."""


def _one_line(e: BaseException, limit: int = 300) -> str:
    return one_line(f"{type(e).__name__}: {e}", limit)


def on_main(world: World, work: Callable[[], T], what: str,
            device: Optional[torch.device] = None) -> Optional[T]:
    """Rank 0 runs ``work()`` while the other ranks wait; its result on rank 0, None elsewhere.

    The wait is a collective in which rank 0 says whether ``work`` failed, so when it raises
    (anything, an interrupt included) every rank raises too, instead of waiting in a barrier for a
    rank 0 that left: rank 0 its own error, the others :class:`MainRankFailed` with its one line.
    Outside a multi-process group it is ``work()``.
    """
    if not world.distributed:
        return work()
    result: Optional[T] = None
    failure: Optional[BaseException] = None
    if world.is_main:
        try:
            result = work()
        except BaseException as e:  # told to the others, then raised here unchanged
            failure = e
    try:
        message = text_from_main(None if failure is None else _one_line(failure), device)
    except Exception:
        if failure is None:
            raise
        message = None  # the collective failed too: rank 0's own error, raised below, is the cause
    if failure is not None:
        raise failure
    if message is not None:
        raise MainRankFailed(f"rank 0 failed in {what}: {message} (rank {dist.get_rank()} stops "
                             "with it; read rank 0's output for the details)")
    return result


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ---- global ("synchronised") batch norm and the DDP wrapper ----------------------------------
class _GlobalBatchNormFn(torch.autograd.Function):
    """Batch norm over the global batch, built from ATen's fused CPU kernels.

    Forward: each rank's per-channel mean and variance come from ``native_batch_norm`` (fused,
    float32 accumulation for bf16 input), one all-gather combines them (Chan et al.'s formula: no
    cancellation), and ``F.batch_norm`` in inference form normalises with the global statistics.
    Backward: ``native_batch_norm_backward`` with the global statistics gives this rank's two
    per-channel sums, one all-reduce makes them global, and the input gradient is a per-channel
    ``a*grad + b*x + c``. This is the computation of :class:`torch.nn.SyncBatchNorm` on CUDA. Weight
    and bias gradients stay local: DDP averages them.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                module: "GlobalBatchNorm") -> torch.Tensor:  # type: ignore[override]
        ones = torch.ones_like(weight)  # float32 parameters: float32 statistics for bf16 input (float64 for float64)
        _, mean_l, invstd_l = torch.native_batch_norm(x, ones, None, None, None, True, 0.0, 0.0)
        var_l = invstd_l.double().pow(-2).to(mean_l.dtype)  # eps 0: exactly the local biased variance
        c = mean_l.numel()
        n_l = torch.full_like(mean_l[:1], x.numel() / c)
        parts = [torch.empty(2 * c + 1, dtype=mean_l.dtype, device=x.device)
                 for _ in range(dist.get_world_size())]
        dist.all_gather(parts, torch.cat([mean_l, var_l, n_l]))
        stats = torch.stack(parts)  # (world, 2C + 1): each rank's mean, variance and count
        means, variances, counts = stats[:, :c], stats[:, c:2 * c], stats[:, 2 * c:]
        n = counts.sum()
        mean = (counts * means).sum(0) / n
        var = (counts * (variances + (means - mean) ** 2)).sum(0) / n
        module._update_running(mean, var, n)
        y = F.batch_norm(x, mean, var, weight, bias, training=False, momentum=0.0, eps=module.eps)
        invstd = torch.rsqrt(var + module.eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.n, ctx.eps = n, module.eps
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, weight, mean, invstd = ctx.saved_tensors
        grad = grad.contiguous(memory_format=_memory_format(x))
        # grad_weight = sum(grad * (x - mean)) * invstd, grad_bias = sum(grad): this rank's sums
        _, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad, x, weight, None, None, mean, invstd, True, ctx.eps, [False, True, True])
        sums = torch.cat([grad_bias, grad_weight / invstd])
        dist.all_reduce(sums)  # every rank's share of the statistics' gradient
        mean_dy, mean_dy_xmu = (sums / ctx.n).view(2, -1)
        w = weight.to(invstd.dtype)
        a = invstd * w
        b = -(invstd ** 3) * w * mean_dy_xmu
        c = (-mean_dy + mean * invstd ** 2 * mean_dy_xmu) * a
        # b*x + c through the fused inference kernel (mean 0, variance 1, eps 0), then + a*grad
        ones = torch.ones_like(mean)
        grad_x = F.batch_norm(x, torch.zeros_like(mean), ones, b, c, training=False, momentum=0.0,
                              eps=0.0)
        shape = [1, -1] + [1] * (x.dim() - 2)
        grad_x = torch.addcmul(grad_x, grad, a.to(grad_x.dtype).view(shape))
        return grad_x, grad_weight, grad_bias, None


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose training statistics cover the global batch of every rank, on any device.

    PyTorch's :class:`torch.nn.SyncBatchNorm` has kernels for CUDA only; this module does the same
    on CPU (gloo), so a run on N processes normalises, and differentiates, as one process does on
    the whole batch. Outside a multi-process group, or in eval(), it is plain batch norm. Its state
    dict is BatchNorm's, so checkpoints load into the plain model.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        if not self.track_running_stats:
            return
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
            unbiased = var * n / (n - 1).clamp(min=1)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training and _distributed()):
            return super().forward(input)
        c = input.shape[1]
        weight = self.weight if self.affine else torch.ones(c, device=input.device)
        bias = self.bias if self.affine else torch.zeros(c, device=input.device)
        return _GlobalBatchNormFn.apply(input, weight, bias, self)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every batch norm of ``module`` made global: PyTorch's SyncBatchNorm on CUDA, else ours.

    The parameters and buffers are the same tensors, so convert before building the optimizer or
    after, either is correct.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats, device=None)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device))
    return out


def data_parallel(model: nn.Module, device: torch.device, world: World) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when the world has several processes.

    DDP broadcasts rank 0's weights at construction (every rank starts equal) and averages the
    gradients in buckets overlapped with backward; the optimizer then steps identically everywhere.
    """
    if not world.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)
