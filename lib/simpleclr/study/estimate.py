"""How long a plan's runs will take on this machine.

A run's cost is counted in *work units*, its stage's training steps' images at 32 px (a SimCLR
image is one image of a SimCLR step: two views, their augmentation and the NT-Xent loss; a forward
pass alone counts 1/3 of a supervised image), from its config and its dataset's image counts in the
data registry (:func:`simpleclr.data.get_spec`). Seconds per unit come, in order of preference,
from a finished run of the same config here (its recorded wall time), from finished runs of the
same stage and step shape here (the fastest rate: runs that shared the machine with other work were
slower, not the machine), or from timing the trainer's own step of that stage now with
:mod:`simpleclr.study.bench` (the SimCLR step for pretraining, the supervised step otherwise) at
the run's own shape (:func:`step_shape`). Rates are never carried from one shape to another by
the area alone: on a 2-core AVX512-BF16 CPU a 16 px SimCLR image at batch 128 costs 5.1 ms against
13.1 ms at 32 px, 39% of it where the area says 25%.

:class:`PlanClock` lives here too: it is nothing but arithmetic on these estimates (totals by stage,
the budget warning, the time left rescaled by how the finished runs compared with theirs), and it
reads a plan only through its attributes, so this module never imports :mod:`simpleclr.study.plans`.
"""
from __future__ import annotations

import math

from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Sequence

from ..config import METHOD_TITLES, RESNET18_WIDTH, STAGES, StageConfig
from ..runs.rundir import BrokenRun, RunDir, read_json
from ..runs.watch import fmt_seconds

# Per notebook in a plan's shared kernel: data loading and the run folder (the kernel's start and
# imports are paid once; the smoke plan's 24 notebooks took 108 s in one kernel, 210-266 s in fresh ones)
NOTEBOOK_OVERHEAD_S = 3.0
# Timed steps take the run's batch up to this many images: the cost per image falls with the batch
# (16 px SimCLR on a 2-core AVX512-BF16 CPU: 7.8 ms an image at batch 32, 5.1 ms at 128), and one
# step of 128 still takes seconds on a 2-core CPU
MEASURE_BATCH = 128


class RunLike(Protocol):
    """What the estimator reads of a plan's run (:class:`simpleclr.study.plans.RunSpec`)."""

    config: StageConfig
    path: Path


class PlanLike(Protocol):
    """What the clock reads of a plan (:class:`simpleclr.study.plans.Plan`)."""

    name: str
    runs: Mapping[str, Any]
    budget_min: Optional[float]
    smaller: Optional[str]


# ---- sizes and work, from the config and the data registry --------------------------------------
def _spec(name: str) -> Any:
    from ..data import get_spec

    try:
        return get_spec(name)
    except Exception:  # a bad name fails properly when the run reads its data
        return None


def dataset_sizes(name: str) -> Optional[tuple[int, int]]:
    """(train, test) image counts of a dataset name, from the registry without reading the data;
    None when only the files know (an image folder) or the name is not a dataset."""
    spec = _spec(name)
    if spec is None or spec.n_train is None:
        return None
    return spec.n_train, spec.n_test or 0


def native_size(name: str) -> int:
    """The side in pixels a dataset's images have on disk (32 where the files decide)."""
    spec = _spec(name)
    return (spec.native_size if spec is not None else None) or 32


def _imagenet_stem(cfg: dict) -> bool:
    weights = str(cfg.get("encoder") or cfg.get("init") or "")
    return cfg.get("stem") == "imagenet" or weights.startswith("imagenet")


def step_shape(cfg: dict) -> tuple[int, int, int]:
    """(side, batch, width) at which a run's step is timed: the side its convolutions see past the
    stem (a quarter of the input behind the ImageNet stem, which downsamples by 4; the CIFAR stem
    keeps it), its batch up to :data:`MEASURE_BATCH` (a probe has none: that many) and its
    encoder's width (a half-width encoder's step is not a quarter of a full one's: the heads, the
    augmentation and the optimizer do not shrink with it)."""
    size = cfg.get("image_size") or native_size(cfg.get("dataset", ""))
    side = max(1, round(size / (4 if _imagenet_stem(cfg) else 1)))
    width = RESNET18_WIDTH if _imagenet_stem(cfg) else int(cfg.get("width") or RESNET18_WIDTH)
    return side, min(int(cfg.get("batch_size") or MEASURE_BATCH), MEASURE_BATCH), width


def work_scale(side: float, width: int) -> float:
    """A step's multiply-adds relative to ResNet-18 at 32 px: the area its convolutions see and
    the width squared (what :func:`work_units` multiplies by and a timed rate is divided by)."""
    return (side / 32) ** 2 * (width / RESNET18_WIDTH) ** 2


def work_units(stage: str, cfg: dict, sizes: Optional[tuple[int, int]] = None) -> Optional[float]:
    """Compute a run costs, in ResNet-18 training-image passes at 32 px (a forward pass: 1/3).

    From the config alone: images seen per epoch times epochs (a SimCLR image is priced by the
    SimCLR step's rate, so its two views are in the rate, not here), the probe's feature
    extraction, scaled by input area relative to 32 px (a quarter of it behind the ImageNet stem,
    which downsamples by 4) and by the encoder's width squared relative to ResNet-18's 64 (a
    convolution's multiply-adds). :func:`work_text` says the same in images.
    """
    sizes = sizes or dataset_sizes(cfg.get("dataset", ""))
    if sizes is None:
        return None
    n_train, n_test = sizes
    size = cfg.get("image_size") or native_size(cfg.get("dataset", ""))
    width = cfg.get("width", RESNET18_WIDTH)
    area = work_scale(size / (4 if _imagenet_stem(cfg) else 1), width)
    if stage == "pretrain":
        return pretrain_images(cfg, n_train) * area
    if stage == "supervised":
        train, _, val = supervised_passes(cfg, n_train)
        return (train + val / 3 + (n_test or 0) / 3) * area
    if stage == "linear_eval":
        return (n_train * cfg.get("label_fraction", 1.0) + (n_test or 0)) / 3 * area
    return None


def pretrain_images(cfg: dict, n_train: int) -> float:
    """Images a SimCLR run trains on (each as two views): its steps' batches, or its epochs over
    the subset left after the kNN monitor's share."""
    if cfg.get("steps"):
        return cfg["steps"] * cfg["batch_size"]
    return cfg["epochs"] * n_train * cfg.get("subset_fraction", 1.0) * (1 - cfg.get("val_fraction", 0.0))


def supervised_split(cfg: dict, n_train: int) -> tuple[float, float]:
    """(fit, validation) image counts of the labelled share (``data.labelled_split``'s, up to
    per-class rounding)."""
    labelled = n_train * cfg.get("subset_fraction", 1.0)
    val = labelled * cfg.get("val_fraction", 0.0)
    return labelled - val, val


def supervised_passes(cfg: dict, n_train: int) -> tuple[float, int, float]:
    """(training-image passes, epochs begun, validation-image passes) of a supervised run:
    ``steps`` batches when set, else its epochs over the fit part, validated each epoch. When it
    chooses among several encoder lr scales, first one trial per scale over the fit part
    (validated each epoch), then its epochs over every labelled image with none held out: the
    refit (``supervised._choose_encoder_lr``; trials need ``steps`` None)."""
    fit, val = supervised_split(cfg, n_train)
    if cfg.get("steps"):
        train = cfg["steps"] * cfg["batch_size"]
        epochs = max(1, math.ceil(train / max(fit, 1.0)))
        return train, epochs, epochs * val
    grid = set(cfg.get("encoder_lr_grid") or ())
    if len(grid) > 1:
        trials = len(grid) * min(cfg.get("trial_epochs", 20), cfg["epochs"])
        return trials * fit + cfg["epochs"] * (fit + val), trials + cfg["epochs"], trials * val
    return cfg["epochs"] * fit, cfg["epochs"], cfg["epochs"] * val


def work_text(stage: str, cfg: dict, sizes: Optional[tuple[int, int]] = None) -> str:
    """What :func:`work_units` counts, in the images a run really passes at its size."""
    sizes = sizes or dataset_sizes(cfg.get("dataset", ""))
    if sizes is None:
        return "size unknown"
    n_train, n_test = sizes
    size = cfg.get("image_size") or native_size(cfg.get("dataset", ""))
    if stage == "pretrain":
        return f"{pretrain_images(cfg, n_train):,.0f} images x 2 views at {size} px"
    if stage == "supervised":
        fit, _ = supervised_split(cfg, n_train)
        train, _, _ = supervised_passes(cfg, n_train)
        return (f"{train:,.0f} training images ({train / max(fit, 1.0):.3g} epochs of {fit:,.0f}) at "
                f"{size} px, plus validation and {n_test:,} test images")
    return f"features of {n_train * cfg.get('label_fraction', 1.0) + n_test:,.0f} images at {size} px"


# ---- seconds ---------------------------------------------------------------------------------------
class Estimator:
    """Seconds a run will take on this machine, from what finished runs here recorded."""

    def __init__(self, outputs: Path):
        import socket

        self.host = socket.gethostname()
        self.finished: list[dict] = []
        self._measured: dict[str, tuple[float, float]] = {}
        for cfg_path in sorted(Path(outputs).glob("*/*/config.json")):
            try:
                cfg = read_json(cfg_path) or {}
                res = read_json(cfg_path.parent / "result.json")
            except BrokenRun:  # a damaged run says so in its own row; it just gives no timing
                continue
            host = ((cfg.get("provenance") or {}).get("hardware") or {}).get("hostname")
            if (cfg.get("config") or {}).get("rehearsal"):  # cut short: its time prices nothing
                continue
            if res and res.get("test_features_reused"):  # skipped half its work: no rate for a fresh one
                continue
            if res and res.get("wall_time_s") and host == self.host and cfg.get("stage") in STAGES:
                self.finished.append({"stage": cfg["stage"], "fingerprint": cfg.get("fingerprint"),
                                      "config": cfg.get("config") or {}, "seconds": float(res["wall_time_s"]),
                                      "sizes": self._sizes(cfg, res),
                                      "shape": step_shape(cfg.get("config") or {})})

    @staticmethod
    def _sizes(cfg: dict, res: dict) -> Optional[tuple[int, int]]:
        data = cfg.get("data") or {}
        if cfg.get("stage") == "pretrain" and data.get("n_train"):
            c = cfg.get("config") or {}
            full = data["n_train"] / max(c.get("subset_fraction", 1.0) * (1 - c.get("val_fraction", 0.0)), 1e-9)
            return (round(full), 0)
        if cfg.get("stage") == "linear_eval" and res.get("n_train") is not None:
            frac = (cfg.get("config") or {}).get("label_fraction", 1.0)
            return (round(res["n_train"] / frac), int(res.get("n_test") or 0))
        return None

    def _rate(self, stage: str, precision: str, shape: tuple[int, int],
              method: str = "simclr") -> tuple[Optional[float], str]:
        rates = []
        for r in self.finished:
            if (r["stage"] != stage or r["config"].get("precision", "auto") != precision
                    or r["shape"] != shape or (stage == "pretrain" and r["config"].get("method", "simclr") != method)):
                continue
            units = work_units(r["stage"], r["config"], r["sizes"])
            if units:
                rates.append(r["seconds"] / units)
        if rates:
            # the fastest: a run that shared the cores with other work measured the load, not the
            # machine, and such runs are the common case on a shared machine
            return min(rates), f"fastest of {len(rates)} finished {stage} run(s) of its shape here"
        return None, ""

    def measure(self, precision: str = "auto", stage: str = "supervised",
                shape: tuple[int, int, int] = (32, MEASURE_BATCH, RESNET18_WIDTH),
                method: str = "simclr") -> tuple[float, float]:
        """(seconds per work unit of ``stage``'s training step at ``shape``, one-off warm-up
        seconds) here, timed now.

        :mod:`simpleclr.study.bench`'s step of ``method`` for ``stage="pretrain"`` (each method is
        priced by its own step: a target network's forward, its EMA and a queue included), its
        supervised step otherwise, on a batch of ``shape = (side, batch, width)`` images at that
        encoder width, once per precision, step and shape. The seconds per image are divided by the
        side's area relative to 32 px and the width's square relative to 64, so that
        :func:`work_units` (which multiplies by both) gives back this shape's own seconds. The first
        three steps (oneDNN's kernel preparation, paid again by every fresh notebook) are the
        warm-up; the median of three more gives the rate.
        """
        kind = "pretrain" if stage == "pretrain" else "supervised"
        side, batch, width = shape
        key = f"{precision}/{kind if kind != 'pretrain' else method}/{side}px/{batch}/w{width}"
        if key not in self._measured:
            from . import bench

            inp = bench.make_inputs(bench.Setup(batch_size=batch, image_size=side, precision=precision,
                                                width=width))
            if kind != "pretrain":
                case = bench.supervised_case(inp)
            else:
                case = bench.simclr_case(inp) if method == "simclr" else bench.method_case(inp, method)
            timing = bench.time_steps(case, inp.rt.device, warmup=3, repeats=3, steps=1)
            self._measured[key] = (timing.seconds / batch / work_scale(side, width), timing.warmup_s)
        return self._measured[key]

    def seconds(self, spec: RunLike) -> tuple[Optional[float], str]:
        """(seconds left, how it was estimated) for a run that is not done."""
        fp = spec.config.fingerprint()
        left = self._fraction_left(spec)
        same = [r for r in self.finished if r["fingerprint"] == fp]
        if same:
            return NOTEBOOK_OVERHEAD_S + same[0]["seconds"] * left, "recorded wall time of the same config here"
        cfg = spec.config.to_dict()
        units = work_units(spec.config.stage, cfg)
        if units is None:
            return None, f"dataset {cfg.get('dataset')} has no known size"
        stage = spec.config.stage
        shape = step_shape(cfg)
        method = cfg.get("method", "simclr")
        rate, basis = self._rate(stage, cfg.get("precision", "auto"), shape, method)
        overhead = NOTEBOOK_OVERHEAD_S
        if rate is None:
            rate, warmup = self.measure(cfg.get("precision", "auto"), stage, shape, method)
            overhead += warmup if stage != "linear_eval" else warmup / 3
            step = METHOD_TITLES[method] if stage == "pretrain" else "supervised"
            per_second = 1 / (rate * work_scale(shape[0], shape[2]))
            basis = (f"timed the {step} step now ({per_second:.0f} img/s at {shape[0]} px, batch "
                     f"{shape[1]}{'' if shape[2] == RESNET18_WIDTH else f', width {shape[2]}'}, "
                     f"{warmup:.0f} s warm-up)")
        return overhead + units * rate * left, f"{basis}; {work_text(stage, cfg)}"

    @staticmethod
    def _fraction_left(spec: RunLike) -> float:
        """1 for a run not started; for a partial one, the share of its epochs still to run."""
        rows = RunDir(spec.path).read_metrics()
        total = getattr(spec.config, "epochs", None)
        if not rows or not total or spec.config.stage == "linear_eval":
            return 1.0
        done = max((r.get("epoch") or 0) for r in rows)
        if getattr(spec.config, "steps", None):
            return max(0.0, 1 - max((r.get("step") or 0) for r in rows) / spec.config.steps)
        return max(0.0, 1 - done / total)


def estimate_runs(plan: PlanLike, names: Sequence[str], outputs: Path) -> dict[str, Optional[float]]:
    """Seconds each run should take on this machine (None where it cannot be estimated)."""
    est = Estimator(outputs)
    return {n: est.seconds(plan.runs[n])[0] for n in names}


# ---- a plan's time left while it runs -------------------------------------------------------------
class PlanClock:
    """The plan's time left: the estimates of the runs still to go, scaled by how this session's
    finished runs compared with their own estimates (a slower machine shows at once). A run is
    scaled by the ratio of its own stage where a run of that stage has finished; other stages by
    the overall ratio pulled towards 1 by :attr:`PRIOR_S` of estimated work, so one short probe
    that took 20 s against 7 s does not triple a plan of long pretrainings."""

    PRIOR_S = 300.0

    def __init__(self, estimates: dict[str, Optional[float]], stages: Optional[dict[str, str]] = None):
        self.estimates = estimates
        self.stages = stages or {}
        self.pending = [n for n in estimates]
        self.spent: dict[str, float] = {}
        self.expected: dict[str, float] = {}

    def summary(self, plan: PlanLike) -> str:
        by_stage: dict[str, float] = {}
        for n, sec in self.estimates.items():
            stage = plan.runs[n].config.stage
            by_stage[stage] = by_stage.get(stage, 0.0) + (sec or 0.0)
        total = sum(by_stage.values())
        unknown = sum(sec is None for sec in self.estimates.values())
        parts = ", ".join(f"{stage} {fmt_seconds(sec)}" for stage, sec in by_stage.items())
        text = (f"plan {plan.name}: estimate on this machine about {fmt_seconds(total)}"
                + (f" ({parts})" if parts else "")
                + (f", {unknown} run(s) not estimated" if unknown else ""))
        if plan.budget_min and total > 2 * 60 * plan.budget_min:
            smaller = f"; for a shorter try: make report PLAN={plan.smaller}" if plan.smaller else ""
            text += (f"\nplan {plan.name}: WARNING: that is {total / 60 / plan.budget_min:.1f}x the "
                     f"{plan.budget_min:g} min it is sized for (a slower CPU, e.g. without bf16, "
                     f"or a busy machine){smaller}")
        return text

    def finished(self, name: str, seconds: float) -> None:
        if name in self.pending:
            self.pending.remove(name)
            if self.estimates.get(name):
                stage = self.stages.get(name, "")
                self.spent[stage] = self.spent.get(stage, 0.0) + seconds
                self.expected[stage] = self.expected.get(stage, 0.0) + self.estimates[name]  # type: ignore[operator]

    def _scale(self, stage: str) -> float:
        if self.expected.get(stage):
            return self.spent[stage] / self.expected[stage]
        spent, expected = sum(self.spent.values()), sum(self.expected.values())
        return (spent + self.PRIOR_S) / (expected + self.PRIOR_S)

    def left_text(self) -> str:
        if not self.estimates or not self.pending:
            return ""
        left = sum(self._scale(self.stages.get(n, "")) * self.estimates[n]  # type: ignore[operator]
                   for n in self.pending if self.estimates.get(n))
        return f"; plan: about {fmt_seconds(left)} left ({len(self.pending)} runs)"
