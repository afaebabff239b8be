"""A short GPU check of the training path (a few minutes of device time), printing JSON.

    python scripts/gpu_check.py            # on a GPU machine: correctness, then the benchmark
    python scripts/gpu_check.py --small    # a quick CPU dry run of the same code

1. Correctness: NT-Xent of one batch under bf16 autocast against fp32 (same weights, same views);
   the on-device augmentation against the CPU path with identical parameters; per-channel
   statistics of the augmented views.
2. Speed: ``simpleclr bench`` with torch.compile off and on, the implied seconds per SimCLR epoch
   over 50,000 32-px images, and the fraction of the device's measured bf16 matmul throughput the
   SimCLR step reaches (ResNet-18, CIFAR stem, 32 px: ~0.56 GFLOP forward per view, x3 for
   forward+backward, x2 views per image).
3. torchrun: a one-epoch pretraining on generated data launched by ``torch.distributed.run`` with
   one process (NCCL on a GPU, gloo on CPU), i.e. the data-parallel path with world size 1.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch

from simpleclr.training.parts import augment, models
from simpleclr.training.methods import simclr as losses
from simpleclr.study import bench
from simpleclr.training.parts.device import resolve_runtime

GFLOP_PER_IMAGE = 0.56 * 3 * 2  # forward per view x (fwd + bwd) x two views


def matmul_tflops(device: torch.device, n: int, dtype: torch.dtype) -> float:
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    bench.sync(device)
    t0, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    bench.sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def correctness(rt, batch: int) -> dict:
    dev = rt.device
    torch.manual_seed(0)
    net = models.SimCLRNet(models.resnet18_encoder("cifar"), models.ProjectionHead()).to(dev)
    net = net.to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=dev)
    aug = augment.SimCLRAugment(32, bench.CIFAR_MEAN, bench.CIFAR_STD)
    gen = torch.Generator(device=dev).manual_seed(0)
    v1, v2 = aug.two_views(images, gen)
    x = torch.cat([v1, v2]).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        z32 = net(x).float()
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            z16 = net(x).float()
    l32 = float(losses.nt_xent(*z32.chunk(2), 0.5))
    l16 = float(losses.nt_xent(*z16.chunk(2), 0.5))
    params = aug.sample_params(batch, 32, 32, torch.Generator().manual_seed(1), torch.device("cpu"))
    on_cpu = aug.apply(images.cpu(), params)
    on_dev = aug.apply(images, {k: v.to(dev) if torch.is_tensor(v) else v for k, v in params.items()})
    return {"nt_xent_fp32": l32, "nt_xent_bf16": l16, "bf16_rel_error": abs(l16 - l32) / l32,
            "bf16_ok": abs(l16 - l32) / l32 < 0.02,
            "augment_device_vs_cpu_max_abs": float((on_dev.cpu() - on_cpu).abs().max()),
            "augment_view_mean": v1.mean(dim=(0, 2, 3)).tolist(),
            "augment_view_std": v1.std(dim=(0, 2, 3)).tolist()}


def torchrun_world_of_one(small: bool) -> dict:
    """The DDP code path (process group, DDP wrapper, rank-0 writes) with one process."""
    with tempfile.TemporaryDirectory() as tmp:
        data = "synthetic-cifar100:classes=10,train=20,test=4" if small else "synthetic-cifar100"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
               "-m", "simpleclr", "pretrain", "--out", f"{tmp}/run", "--data-dir", f"{tmp}/data",
               "--dataset", data, "--image-size", "32", "--epochs", "1", "--warmup-epochs", "0", "--batch-size",
               "64" if small else "256", "--knn-every", "0", "--progress", "false"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        out = {"returncode": proc.returncode, "wall_s": time.perf_counter() - t0}
        if proc.returncode != 0:
            return {**out, "stderr_tail": proc.stderr[-2000:]}
        result = json.loads(open(f"{tmp}/run/result.json").read())
        return {**out, **{k: result[k] for k in ("steps", "images_per_s", "final_loss", "runtime")}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--small", action="store_true", help="tiny sizes, for a CPU dry run")
    a = p.parse_args()
    rt = resolve_runtime("auto", "auto", True)
    batch = 16 if a.small else 512
    out = {"device": bench.device_name(rt.device), "torch": torch.__version__,
           "precision": rt.precision, "correctness": correctness(rt, 32 if a.small else 256)}
    out["matmul_tflops_bf16"] = matmul_tflops(rt.device, 512 if a.small else 8192, torch.bfloat16)
    for compile in (False, True):
        r = bench.run_bench(bench.Setup(batch_size=batch, compile=compile), repeats=1 if a.small else 5,
                            steps=1 if a.small else 10, warmup=1 if a.small else 5)
        simclr = r["results"]["simclr_step"]["images_per_s"]
        out[f"compile={compile}"] = {
            **{k: v["images_per_s"] for k, v in r["results"].items()}, "ratios": r["ratios"],
            "simclr_epoch_s_50k": 50_000 / simclr,
            "fraction_of_matmul": simclr * GFLOP_PER_IMAGE / 1e3 / out["matmul_tflops_bf16"],
            "peak_memory_mb": r["peak_memory_mb"]}
    out["torchrun_world1"] = torchrun_world_of_one(a.small)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
