"""``simpleclr bench``: how fast the training and evaluation paths run on this device.

Every figure is measured in one process, after warm-up, as the median of several repeats, on the
exact objects the trainer builds (:func:`simpleclr.training.stages.pretrain.build_pretrain`,
:func:`simpleclr.training.trainer.train_step`, ...), so
ratios between lines are meaningful even on a shared, noisy machine:

- ``model_step``: ResNet-18 + projection head forward/backward/NT-Xent/optimizer step on ready,
  normalised views (the ceiling for this device: no augmentation, no data indexing);
- ``simclr_step``: the real pretraining step end to end (index batch -> two on-device views ->
  forward -> NT-Xent -> backward -> LARS step -> schedule);
- ``mocov2_step``, ``byol_step``, ``simsiam_step``, ``barlow_step``, ``vicreg_step``: each method's
  pretraining step end to end at its recipe's heads (target network, queue and EMA included), the
  ratio to ``simclr_step`` measured in the same process;
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
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch

from ..config import METHOD_NAMES, RECIPE_FIELDS, PretrainConfig, SupervisedConfig
from ..configio import parse_bool
from ..training.parts.device import Runtime, resolve_runtime

CIFAR_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR_STD = (0.2673, 0.2564, 0.2762)
METHOD_CASES = tuple(f"{m}_step" for m in METHOD_NAMES if m != "simclr")
CASES = ("model_step", "simclr_step", *METHOD_CASES, "augment", "supervised_step", "linear_eval_features")
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
    p.add_argument("--width", type=int, default=64, choices=(8, 16, 32, 64, 128),
                   help="the encoder's first-stage channels (64: ResNet-18; the CPU plans use 32)")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    p.add_argument("--channels-last", type=parse_bool, default=True)
    p.add_argument("--compile", type=parse_bool, default=False)
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


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer reads compute, not launch (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """One case's timing: the median seconds per call, and what the warm-up calls cost on top
    (oneDNN's kernel preparation, cuDNN's autotuning: paid again by every fresh process)."""

    seconds: float
    warmup_s: float


def time_steps(fn: Callable[[], Any], device: torch.device, *, warmup: int, repeats: int,
               steps: int) -> Timing:
    """Median seconds per call over ``repeats`` groups of ``steps`` calls, after ``warmup`` calls
    timed one by one (their excess over the median is :attr:`Timing.warmup_s`)."""
    first = []
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        sync(device)
        first.append(time.perf_counter() - t0)
    per_call = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        per_call.append((time.perf_counter() - t0) / steps)
    median = statistics.median(per_call)
    return Timing(median, sum(max(0.0, t - median) for t in first))


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---- the cases: each builds the trainer's own objects and returns one step to time -------------
@dataclass
class Inputs:
    """What every case steps on: the runtime, random uint8 images and labels already on the
    device, the augmentation generator and endless index batches drawn as the trainer draws them."""

    cfg: PretrainConfig
    rt: Runtime
    data: torch.Tensor
    labels: torch.Tensor
    gen: torch.Generator
    batches: Iterator[torch.Tensor]
    image_size: int

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size


BIG = 10**9  # a schedule long enough never to reach its end during the benchmark


@dataclass(frozen=True)
class Setup:
    """What a benchmark steps on: the batch and image side, the runtime (precision, memory format,
    ``torch.compile``, device) and the models' ``stem`` and ``width``."""

    batch_size: int = 256
    image_size: int = 32
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    device: str = "auto"
    stem: str = "cifar"
    width: int = 64


def make_inputs(setup: Setup) -> Inputs:
    """The runtime and data of a benchmark: ``max(4 * batch_size, 2048)`` random images."""
    batch_size, image_size = setup.batch_size, setup.image_size
    cfg = PretrainConfig(batch_size=batch_size, precision=setup.precision, channels_last=setup.channels_last,
                         compile=setup.compile, device=setup.device, epochs=1, warmup_epochs=0.0,
                         stem=setup.stem, width=setup.width)
    rt = resolve_runtime(cfg.device, cfg.precision, cfg.channels_last)
    n_data = max(4 * batch_size, 2048)
    data = torch.randint(0, 256, (n_data, 3, image_size, image_size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0)).to(rt.device)
    labels = torch.randint(0, 100, (n_data,), generator=torch.Generator().manual_seed(1)).to(rt.device)
    return Inputs(cfg, rt, data, labels, torch.Generator(device=rt.device).manual_seed(0),
                  _batches(n_data, batch_size, rt.device), image_size)


def simclr_parts(inp: Inputs, method: str = "simclr") -> Any:
    """ResNet-18 + the method's heads, augmentation, optimizer and schedule, as
    :func:`pretrain.pretrain` builds them (the method's recipe at the benchmark's batch)."""
    from ..training.stages import pretrain

    cfg = inp.cfg if method == "simclr" else PretrainConfig(**{
        **{k: v for k, v in inp.cfg.to_dict().items()
           if k not in RECIPE_FIELDS or k in ("batch_size", "warmup_epochs")}, "method": method})
    return pretrain.build_pretrain(cfg, inp.rt, image_size=inp.image_size, mean=CIFAR_MEAN,
                                   std=CIFAR_STD, total_steps=BIG, warmup_steps=0)


def method_case(inp: Inputs, method: str) -> Callable[[], None]:
    """``method``'s pretraining step end to end (its target network, queue and EMA included)."""
    return simclr_case(inp, simclr_parts(inp, method))


def model_case(inp: Inputs, parts: Any) -> Callable[[], None]:
    """Forward/backward/NT-Xent/optimizer step on views augmented once, up front."""
    from ..training.methods.simclr import nt_xent

    views = parts.objective.augment(inp.data[: 2 * inp.batch_size], inp.gen)
    views = views.contiguous(memory_format=torch.channels_last) if inp.rt.channels_last else views

    def model_step() -> None:
        parts.optimizer.zero_grad(set_to_none=True)
        with inp.rt.autocast():
            z = parts.train_model(views)
        z1, z2 = z.float().chunk(2)
        nt_xent(z1, z2, inp.cfg.temperature).backward()
        parts.optimizer.step()

    return model_step


def simclr_case(inp: Inputs, parts: Any = None) -> Callable[[], None]:
    """The real pretraining step end to end: one call trains on ``batch_size`` images (two views each)."""
    from ..training.trainer import train_step

    parts = parts if parts is not None else simclr_parts(inp)

    def simclr() -> None:
        train_step(parts, inp.data[next(inp.batches)], None, inp.gen, check_finite=False)

    return simclr


def augment_case(inp: Inputs) -> Callable[[], Any]:
    """The two-view augmentation alone."""
    from ..training.parts.augment import SimCLRAugment

    aug = SimCLRAugment(inp.image_size, CIFAR_MEAN, CIFAR_STD)
    return lambda: aug.two_views(inp.data[next(inp.batches)], inp.gen)


def supervised_case(inp: Inputs) -> Callable[[], None]:
    """The supervised step end to end (crop + flip, forward, cross-entropy, backward, SGD step)."""
    from ..training.stages import supervised as supervised_mod
    from ..training.trainer import train_step

    c = inp.cfg
    scfg = SupervisedConfig(batch_size=c.batch_size, precision=c.precision, compile=c.compile,
                            channels_last=c.channels_last, device=c.device, epochs=1, warmup_epochs=0.0,
                            stem=c.stem, width=c.width)
    parts = supervised_mod.build_supervised(scfg, inp.rt, image_size=inp.image_size, mean=CIFAR_MEAN,
                                            std=CIFAR_STD, num_classes=100, total_steps=BIG,
                                            warmup_steps=0).train

    def supervised() -> None:
        idx = next(inp.batches)
        train_step(parts, inp.data[idx], inp.labels[idx], inp.gen, check_finite=False)

    return supervised


def features_case(inp: Inputs, n: int) -> Callable[[], Any]:
    """Frozen-encoder feature extraction of ``n`` images (one view, no grad)."""
    from ..training import probe
    from ..training.parts import models

    encoder = models.resnet18_encoder("cifar").to(inp.rt.device)
    return lambda: probe.extract_features(encoder, inp.data[:n], CIFAR_MEAN, CIFAR_STD, inp.rt,
                                             batch_size=max(inp.batch_size, 512))


# ---- the command ------------------------------------------------------------------------------
def _rate(seconds: float, images: int) -> dict[str, float]:
    return {"images_per_s": images / seconds, "ms_per_step": 1e3 * seconds}


def _simclr_results(inp: Inputs, only: list[str], timing: dict) -> dict[str, dict]:
    """``model_step`` and ``simclr_step``, on one set of SimCLR parts."""
    res: dict[str, dict] = {}
    parts = simclr_parts(inp)
    b = inp.batch_size
    if "model_step" in only:
        s = time_steps(model_case(inp, parts), **timing).seconds
        res["model_step"] = {"images_per_s": b / s, "views_per_s": 2 * b / s, "ms_per_step": 1e3 * s}
    if "simclr_step" in only:
        res["simclr_step"] = _rate(time_steps(simclr_case(inp, parts), **timing).seconds, b)
    return res


def _ratios(res: dict[str, dict]) -> dict[str, float]:
    ratios = {}
    if "model_step" in res and "simclr_step" in res:
        ratios["simclr_step / model_step"] = res["simclr_step"]["images_per_s"] / res["model_step"]["images_per_s"]
    for case in METHOD_CASES:  # a method's step against SimCLR's, both timed in this process
        if case in res and "simclr_step" in res:
            ratios[f"{case} / simclr_step"] = res["simclr_step"]["images_per_s"] / res[case]["images_per_s"]
    if "model_step" in res and "linear_eval_features" in res:
        # one feature = one forward of one view; a training "view" is one forward + backward
        ratios["features / model_step views"] = (res["linear_eval_features"]["images_per_s"]
                                                 / res["model_step"]["views_per_s"])
    return ratios


def run_bench(setup: Setup, *, repeats: int = 5, steps: int = 3, warmup: int = 2,
              only: Optional[list[str]] = None) -> dict:
    """Measure the cases in ``only`` on ``setup`` and return a JSON-ready dict of figures."""
    only = list(only or CASES)
    batch_size, image_size, compile = setup.batch_size, setup.image_size, setup.compile
    inp = make_inputs(setup)
    dev = inp.rt.device
    timing = dict(device=dev, warmup=warmup, repeats=repeats, steps=steps)
    out: dict[str, Any] = {"device": str(dev), "device_name": device_name(dev),
                           "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "precision": inp.rt.precision, "channels_last": inp.rt.channels_last,
                           "compile": compile, "batch_size": batch_size, "image_size": image_size,
                           "width": setup.width,
                           "unit": "images/s (a SimCLR image is two views)", "results": {}}
    res = out["results"]
    if {"model_step", "simclr_step"} & set(only):
        res.update(_simclr_results(inp, only, timing))
    for case in METHOD_CASES:
        if case in only:
            res[case] = _rate(time_steps(method_case(inp, case.removesuffix("_step")), **timing).seconds,
                              batch_size)
    if "augment" in only:
        res["augment"] = _rate(time_steps(augment_case(inp), **timing).seconds, batch_size)
    if "supervised_step" in only:
        res["supervised_step"] = _rate(time_steps(supervised_case(inp), **timing).seconds, batch_size)
    if "linear_eval_features" in only:
        n = 4 * batch_size
        s = time_steps(features_case(inp, n), device=dev, warmup=1, repeats=max(3, repeats // 2),
                       steps=1).seconds
        res["linear_eval_features"] = {"images_per_s": n / s, "ms_per_step": 1e3 * s * batch_size / n}
    out["ratios"] = _ratios(res)
    out["peak_memory_mb"] = _peak_memory_mb(dev)
    return out


def _batches(n: int, batch_size: int, device: torch.device):
    """Endless random index batches, as the trainer draws them (a permutation per epoch)."""
    g = torch.Generator().manual_seed(2)
    while True:
        perm = torch.randperm(n, generator=g).to(device)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i:i + batch_size]


def device_name(dev: torch.device) -> str:
    """The GPU's name, or the CPU model this process runs on: what a timing was measured on."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    from ..runs.rundir import hardware

    return str(hardware().get("cpu", "cpu"))


def format_table(out: dict) -> str:
    lines = [f"device {out['device']} ({out['device_name']}), torch {out['torch']}, "
             f"{out['threads']} threads, {out['precision']}, channels_last={out['channels_last']}, "
             f"compile={out['compile']}, batch {out['batch_size']}, {out['image_size']} px, "
             f"width {out.get('width', 64)}",
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
        setup = Setup(batch_size=opts["batch_size"], image_size=ns.image_size, precision=ns.precision,
                      channels_last=ns.channels_last, compile=ns.compile, device=ns.device, width=ns.width)
        out = run_bench(setup, repeats=opts["repeats"], steps=opts["steps"], warmup=opts["warmup"],
                        only=opts["only"])
    out["profile"] = "full" if ns.full else "quick"
    print(json.dumps(out, indent=2) if ns.json else format_table(out))
    return 0
