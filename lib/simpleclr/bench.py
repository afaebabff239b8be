"""``simpleclr bench``: how fast the training and evaluation paths run on this device.

Every figure is measured in one process, after warm-up, as the median of several repeats, on the
exact objects the trainer builds (:func:`simpleclr.pretrain.build_simclr`, ``simclr_step``, ...), so
ratios between lines are meaningful even on a shared, noisy machine:

- ``model_step``: ResNet-18 + projection head forward/backward/NT-Xent/optimizer step on ready,
  normalised views (the ceiling for this device: no augmentation, no data indexing);
- ``simclr_step``: the real pretraining step end to end (index batch -> two on-device views ->
  forward -> NT-Xent -> backward -> LARS step -> schedule);
- ``augment``: the two-view augmentation alone; ``supervised_step``: the supervised step end to end;
- ``linear_eval_features``: frozen-encoder feature extraction (one view, no grad).

SimCLR lines count *images*: one image is two views, two forward/backward passes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import sys
import time
from typing import Any, Callable, Optional

import torch

from .config import PretrainConfig, SupervisedConfig, _parse_bool

CIFAR_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR_STD = (0.2673, 0.2564, 0.2762)
CASES = ("model_step", "simclr_step", "augment", "supervised_step", "linear_eval_features")
# The default answers in about two minutes on a 2-core CPU (fp32 on AVX2 included): the three
# stages a plan spends its time in, few repeats. ``--full`` is the exhaustive run.
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"batch_size": 64, "repeats": 3, "steps": 1, "warmup": 1,
              "only": ["simclr_step", "supervised_step", "linear_eval_features"]},
    "full": {"batch_size": 256, "repeats": 5, "steps": 3, "warmup": 2, "only": list(CASES)},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    q, f = PROFILES["quick"], PROFILES["full"]
    p.add_argument("--full", action="store_true",
                   help=f"every case, batch {f['batch_size']}, {f['repeats']}x{f['steps']} steps "
                        "(minutes to an hour on a CPU); default: the headline cases, "
                        f"batch {q['batch_size']}, {q['repeats']} repeats")
    p.add_argument("--batch-size", type=int, default=None, help="images per step")
    p.add_argument("--image-size", type=int, default=32, choices=(16, 32, 64))
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    p.add_argument("--channels-last", type=_parse_bool, default=True)
    p.add_argument("--compile", type=_parse_bool, default=False)
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats; the median is reported")
    p.add_argument("--steps", type=int, default=None, help="steps per repeat")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps")
    p.add_argument("--only", nargs="+", choices=CASES, default=None)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (nothing else) instead of a table")


def resolve_options(ns: argparse.Namespace) -> dict[str, Any]:
    """The profile's settings (quick, or full with ``--full``), overridden by each option given."""
    chosen = dict(PROFILES["full" if ns.full else "quick"])
    for key in chosen:
        if getattr(ns, key) is not None:
            chosen[key] = getattr(ns, key)
    return chosen


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device, *, warmup: int, repeats: int, steps: int) -> float:
    """Median seconds per call over ``repeats`` groups of ``steps`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    per_call = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(device)
        per_call.append((time.perf_counter() - t0) / steps)
    return statistics.median(per_call)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_bench(batch_size: int = 256, image_size: int = 32, precision: str = "auto",
              channels_last: bool = True, compile: bool = False, device: str = "auto",
              repeats: int = 5, steps: int = 3, warmup: int = 2,
              only: Optional[list[str]] = None) -> dict:
    """Measure the cases in ``only`` and return a JSON-ready dict of figures."""
    from . import augment as augment_mod
    from . import evaluate, models
    from . import pretrain as pretrain_mod
    from . import supervised as supervised_mod
    from .losses import nt_xent
    from .device import resolve_runtime

    only = list(only or CASES)
    cfg = PretrainConfig(batch_size=batch_size, precision=precision, channels_last=channels_last,
                         compile=compile, device=device, epochs=1, warmup_epochs=0.0)
    rt = resolve_runtime(cfg.device, cfg.precision, cfg.channels_last)
    dev = rt.device
    gen = torch.Generator(device=dev).manual_seed(0)
    n_data = max(4 * batch_size, 2048)
    data = torch.randint(0, 256, (n_data, 3, image_size, image_size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0)).to(dev)
    labels = torch.randint(0, 100, (n_data,), generator=torch.Generator().manual_seed(1)).to(dev)
    batch_of = _batches(n_data, batch_size, dev)
    timing = dict(device=dev, warmup=warmup, repeats=repeats, steps=steps)
    out: dict[str, Any] = {"device": str(dev), "device_name": _device_name(dev),
                           "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "precision": rt.precision, "channels_last": rt.channels_last,
                           "compile": compile, "batch_size": batch_size, "image_size": image_size,
                           "unit": "images/s (a SimCLR image is two views)", "results": {}}
    res = out["results"]
    big = 10**9  # a schedule long enough never to reach its end during the benchmark

    if {"model_step", "simclr_step"} & set(only):
        parts = pretrain_mod.build_simclr(cfg, rt, image_size=image_size, mean=CIFAR_MEAN,
                                          std=CIFAR_STD, total_steps=big, warmup_steps=0)
        if "model_step" in only:
            views = parts.augment(data[: 2 * batch_size], gen)
            views = views.contiguous(memory_format=torch.channels_last) if rt.channels_last else views

            def model_step() -> None:
                parts.optimizer.zero_grad(set_to_none=True)
                with rt.autocast():
                    z = parts.train_model(views)
                z1, z2 = z.float().chunk(2)
                nt_xent(z1, z2, cfg.temperature).backward()
                parts.optimizer.step()

            s = _time(model_step, **timing)
            res["model_step"] = {"images_per_s": batch_size / s, "views_per_s": 2 * batch_size / s,
                                 "ms_per_step": 1e3 * s}
        if "simclr_step" in only:
            def simclr() -> None:
                pretrain_mod.simclr_step(parts.train_model, parts.augment, parts.optimizer,
                                         parts.scheduler, rt, data[next(batch_of)], gen, cfg.temperature,
                                         parts.scaler, check_finite=False)

            s = _time(simclr, **timing)
            res["simclr_step"] = {"images_per_s": batch_size / s, "ms_per_step": 1e3 * s}
        del parts

    if "augment" in only:
        aug = augment_mod.SimCLRAugment(image_size, CIFAR_MEAN, CIFAR_STD)
        s = _time(lambda: aug.two_views(data[next(batch_of)], gen), **timing)
        res["augment"] = {"images_per_s": batch_size / s, "ms_per_step": 1e3 * s}

    if "supervised_step" in only:
        scfg = SupervisedConfig(batch_size=batch_size, precision=precision, compile=compile,
                                channels_last=channels_last, device=device, epochs=1, warmup_epochs=0.0)
        sparts = supervised_mod.build_supervised(scfg, rt, image_size=image_size, mean=CIFAR_MEAN,
                                                 std=CIFAR_STD, num_classes=100, total_steps=big,
                                                 warmup_steps=0)

        def supervised() -> None:
            idx = next(batch_of)
            supervised_mod.supervised_step(sparts.train_model, sparts.augment, sparts.optimizer,
                                           sparts.scheduler, rt, data[idx], labels[idx], gen,
                                           scaler=sparts.scaler, check_finite=False)

        s = _time(supervised, **timing)
        res["supervised_step"] = {"images_per_s": batch_size / s, "ms_per_step": 1e3 * s}
        del sparts

    if "linear_eval_features" in only:
        encoder = models.resnet18_encoder("cifar").to(dev)
        n = 4 * batch_size
        s = _time(lambda: evaluate.extract_features(encoder, data[:n], CIFAR_MEAN, CIFAR_STD, rt,
                                                    batch_size=max(batch_size, 512)),
                  device=dev, warmup=1, repeats=max(3, repeats // 2), steps=1)
        res["linear_eval_features"] = {"images_per_s": n / s, "ms_per_step": 1e3 * s * batch_size / n}

    ratios = {}
    if "model_step" in res and "simclr_step" in res:
        ratios["simclr_step / model_step"] = res["simclr_step"]["images_per_s"] / res["model_step"]["images_per_s"]
    if "model_step" in res and "linear_eval_features" in res:
        # one feature = one forward of one view; a training "view" is one forward + backward
        ratios["features / model_step views"] = (res["linear_eval_features"]["images_per_s"]
                                                 / res["model_step"]["views_per_s"])
    out["ratios"] = ratios
    out["peak_memory_mb"] = _peak_memory_mb(dev)
    return out


def _batches(n: int, batch_size: int, device: torch.device):
    """Endless random index batches, as the trainer draws them (a permutation per epoch)."""
    g = torch.Generator().manual_seed(2)
    while True:
        perm = torch.randperm(n, generator=g).to(device)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i:i + batch_size]


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    from .runs import hardware

    return str(hardware().get("cpu", "cpu"))


def format_table(out: dict) -> str:
    lines = [f"device {out['device']} ({out['device_name']}), torch {out['torch']}, "
             f"{out['threads']} threads, {out['precision']}, channels_last={out['channels_last']}, "
             f"compile={out['compile']}, batch {out['batch_size']}, {out['image_size']} px",
             f"{'case':<22}{'images/s':>12}{'ms/step':>10}"]
    for name, r in out["results"].items():
        lines.append(f"{name:<22}{r['images_per_s']:>12.1f}{r['ms_per_step']:>10.1f}")
    for name, v in out["ratios"].items():
        lines.append(f"ratio {name:<30}{v:>8.2f}")
    lines.append(f"peak memory {out['peak_memory_mb']:.0f} MB; {out['unit']}")
    return "\n".join(lines)


def main(ns: argparse.Namespace) -> int:
    opts = resolve_options(ns)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the result alone
        out = run_bench(opts["batch_size"], ns.image_size, ns.precision, ns.channels_last,
                        ns.compile, ns.device, opts["repeats"], opts["steps"], opts["warmup"],
                        opts["only"])
    out["profile"] = "full" if ns.full else "quick"
    print(json.dumps(out, indent=2) if ns.json else format_table(out))
    return 0
