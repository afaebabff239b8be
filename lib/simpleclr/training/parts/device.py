"""Choosing the device and the fastest correct numerics for it (bf16 autocast, channels_last).

Every stage and the benchmark go through :func:`resolve_runtime`, so "auto" means the same thing
everywhere: bf16 autocast where the hardware computes it natively (recent x86 CPUs with AVX512-BF16
or AMX, Ampere+ GPUs), fp16 with a gradient scaler on older GPUs, fp32 otherwise.

On a CPU without native bf16 (AVX2 only), oneDNN emulates it and autocast costs about 4-5x instead
of paying (figures in docs/evidence.md), so "auto" keeps fp32 there and an explicit bf16 says so
once.
"""
from __future__ import annotations

import contextlib
import os
import random
import sys
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch

from ...config import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: Optional[torch.dtype]  # None: plain fp32
    channels_last: bool
    use_grad_scaler: bool

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def describe(self) -> dict:
        return {"device": str(self.device), "precision": self.precision,
                "channels_last": self.channels_last, "threads": torch.get_num_threads()}


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where autocast pays."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        flags = ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    try:  # oneDNN's own answer where /proc/cpuinfo is absent (e.g. macOS on Apple silicon)
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and not flags
    except (AttributeError, RuntimeError):
        return False


def resolve_device(name: str = "auto") -> torch.device:
    """The device ``name`` means for this process: ``auto`` and an unindexed ``cuda`` are
    ``cuda:LOCAL_RANK`` (the GPU torchrun gave this rank; 0 outside torchrun)."""
    local_gpu = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if name == "auto":
        if torch.cuda.is_available():
            return local_gpu
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} was asked for but no CUDA GPU is visible: use device='auto' or 'cpu'")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device='mps' was asked for but MPS is not available: use device='auto' or 'cpu'")
    return local_gpu if name == "cuda" else torch.device(name)


WARNED: set[str] = set()  # the messages printed so far in this process: each is printed once


def _warn_once(message: str) -> None:
    if message not in WARNED:
        WARNED.add(message)
        print(f"simpleclr: {message}", file=sys.stderr, flush=True)


def resolve_runtime(device: str = "auto", precision: str = "auto", channels_last: bool = True,
                    num_threads: Optional[int] = None) -> Runtime:
    """The device and numerics a stage runs with; "auto" picks the fastest correct choice."""
    if num_threads:
        torch.set_num_threads(num_threads)
    dev = resolve_device(device)
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif dev.type == "cpu":
            precision = "bf16" if cpu_supports_bf16() else "fp32"
        else:
            precision = "fp32"
    if precision == "bf16" and dev.type == "cpu" and not cpu_supports_bf16():
        _warn_once("precision='bf16' on a CPU without AVX512-BF16/AMX is emulated and about 4-5x "
                   "slower than fp32 here: use precision='auto' (fp32 on this CPU)")
    if precision == "fp16" and dev.type == "cpu":
        raise ConfigError("precision='fp16' is not supported on CPU: use 'bf16' or 'fp32' (or 'auto')")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return Runtime(device=dev, amp_dtype=dtype, channels_last=channels_last and dev.type != "mps",
                   use_grad_scaler=dtype is torch.float16)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for the stage's own draws."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state(extra: dict[str, torch.Generator]) -> dict:
    """Every RNG's state as tensors and plain numbers, so last.pt loads with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                        "gauss": py_gauss},
             **{k: g.get_state() for k, g in extra.items()}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """The inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``module`` in eval() for the block and restore its previous mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


# ---- peak memory of a run ----------------------------------------------------------------------
def reset_peak_memory(device: Optional[torch.device] = None) -> None:
    """Start counting a run's peak memory now: the CUDA allocator's peak on a GPU; on Linux the
    process's peak resident size (``/proc/self/clear_refs``), so runs sharing one kernel are
    counted apart. Elsewhere the process peak keeps counting from its start."""
    if device is not None and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def peak_memory(device: Optional[torch.device] = None) -> dict:
    """``{"peak_memory_mb", "peak_memory_of"}`` since :func:`reset_peak_memory`: what the GPU's
    allocator held at most, or the process's peak resident size on a CPU."""
    if device is not None and device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_memory_of": "cuda allocator"}
    kib = _status_kib("VmHWM")
    if kib is not None:
        return {"peak_memory_mb": kib / 1024, "peak_memory_of": "process resident (since the run began)"}
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 if sys.platform != "darwin" else 1024)
    return {"peak_memory_mb": kib / 1024, "peak_memory_of": "process resident (since it started)"}


def resident_mb() -> float:
    """This process's resident memory now (Linux; 0 where /proc is absent)."""
    kib = _status_kib("VmRSS")
    return 0.0 if kib is None else kib / 1024


def _status_kib(field: str) -> Optional[float]:
    """A ``/proc/self/status`` memory field in KiB; None where it cannot be read."""
    try:
        with open("/proc/self/status") as f:
            return float(next(line.split()[1] for line in f if line.startswith(f"{field}:")))
    except (OSError, StopIteration, ValueError):
        return None
