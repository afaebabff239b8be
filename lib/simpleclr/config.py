"""One frozen dataclass per stage, validated on construction.

The same field names are the notebook's ``parameters`` cell, the CLI's options (generated from the
fields by :func:`simpleclr.configio.add_config_arguments`) and the keys of ``config.json`` in a run folder, so the
three cannot drift apart. Every check raises :class:`ConfigError` with one line naming the field,
the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import shlex
import typing
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Optional, Tuple, Type, TypeVar

from .errors import SimpleCLRError

T = TypeVar("T", bound="StageConfig")

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
STEMS = ("cifar", "imagenet")
OPTIMIZERS = ("lars", "sgd", "adamw")
LR_SCALINGS = ("linear", "sqrt", "none")
# What a linear probe reads: the encoder output h, or SimCLR's projection head output g(h)
PROBE_LAYERS = ("encoder", "projection")
# SimCLR Appendix B.8's probe grid: 45 log-spaced penalties from 1e-6 to 1e5 (3 significant digits).
PROBE_WEIGHT_DECAYS: Tuple[float, ...] = tuple(float(f"{10 ** (-6 + 11 * i / 44):.3g}") for i in range(45))
# Fields that change how fast a run goes, never what it computes: a finished run is still
# "the same run" when only these differ (see :meth:`StageConfig.fingerprint`).
# ``rehearsal`` is one too (a rehearsal runs the very config, cut short), but a folder holding a
# rehearsal never passes for the real run's (:meth:`simpleclr.runs.rundir.RunDir.finished`).
RUNTIME_FIELDS = frozenset({"device", "compile", "data_dir", "progress", "num_threads", "launcher",
                            "rehearsal"})
# Fields added after run folders existed, with the value every earlier run had: at that value they
# stay out of the fingerprint, so those folders are still found finished.
RESNET18_WIDTH = 64  # the encoder's first-stage channels in ResNet-18 (and torchvision's weights)
LATER_FIELDS: dict[str, Any] = {"width": RESNET18_WIDTH, "keep_epochs": []}

# ---- the self-supervised methods' published recipes -------------------------------------------
# ``PretrainConfig.method`` names one (training.methods.METHODS maps the same names to classes).
# Every field below left at None takes its method's value here, so config.json records what ran;
# a method-specific field another method has no use for must stay None (refused with one line).
# Sources: SimCLR, google-research/simclr's CIFAR command (the study's SimCLR rows, unchanged);
# the others, solo-learn's scripts/pretrain/cifar/<method>.yaml (vturrisi/solo-learn @ 9187ea3),
# its lr scaled by batch/256 (solo/args/pretrain.py) and its default warm-up of 10 epochs.
SHARED_RECIPE = ("batch_size", "optimizer", "lr", "weight_decay", "warmup_epochs", "proj_hidden",
                 "proj_out", "crop_scale_min", "solarize_prob", "jitter_saturation", "lars_eta", "lars_clip")
METHOD_FIELDS: dict[str, tuple[str, ...]] = {  # each method's own fields besides the shared ones
    "simclr": ("temperature", "proj_bn"),
    "mocov2": ("temperature", "queue_size", "tau_base", "tau_final"),
    "byol": ("pred_hidden", "tau_base", "tau_final"),
    "simsiam": ("pred_hidden",),
    "barlow": ("barlow_lambda", "barlow_scale"),
    "vicreg": ("vicreg_sim", "vicreg_var", "vicreg_cov"),
}
_LARS = {"optimizer": "lars", "lars_eta": 0.02, "lars_clip": True}  # solo-learn: eta 0.02, clip_lr
_SGD = {"optimizer": "sgd", "lars_eta": None, "lars_clip": None}
METHOD_RECIPES: dict[str, dict[str, Any]] = {
    "simclr": {"batch_size": 512, "optimizer": "lars", "lr": 1.0, "weight_decay": 1e-4,  # google CIFAR
               "warmup_epochs": 10.0, "proj_hidden": 2048, "proj_out": 128, "proj_bn": True,
               "temperature": 0.5, "crop_scale_min": 0.08, "solarize_prob": 0.0,
               "lars_eta": 0.001, "lars_clip": False},  # SimCLR's LARS: trust 0.001, no clipping
    "mocov2": {**_SGD, "batch_size": 256, "lr": 0.3, "weight_decay": 1e-4, "warmup_epochs": 10.0,
               "proj_hidden": 2048, "proj_out": 256, "temperature": 0.2, "queue_size": 32768,
               "tau_base": 0.99, "tau_final": 0.999,  # mocov2plus.yaml
               "crop_scale_min": 0.08, "solarize_prob": 0.0},  # augmentations/symmetric_weak.yaml
    "byol": {**_LARS, "batch_size": 256, "lr": 1.0, "weight_decay": 1e-5, "warmup_epochs": 10.0,
             "proj_hidden": 4096, "proj_out": 256, "pred_hidden": 4096,
             "tau_base": 0.99, "tau_final": 1.0,  # byol.yaml
             "crop_scale_min": 0.08, "solarize_prob": 0.2,  # augmentations/asymmetric.yaml: view 2
             "jitter_saturation": 0.2},  # asymmetric.yaml: brightness/contrast 0.4, saturation 0.2
    "simsiam": {**_SGD, "batch_size": 256, "lr": 0.5, "weight_decay": 1e-5, "warmup_epochs": 10.0,
                "proj_hidden": 2048, "proj_out": 2048, "pred_hidden": 512,  # simsiam.yaml
                "crop_scale_min": 0.08, "solarize_prob": 0.0},  # augmentations/symmetric_weak.yaml
    "barlow": {**_LARS, "batch_size": 256, "lr": 0.3, "weight_decay": 1e-4, "warmup_epochs": 10.0,
               "proj_hidden": 2048, "proj_out": 2048, "barlow_scale": 0.1,  # barlow.yaml
               "barlow_lambda": 0.0051,  # solo/methods/barlow_twins.py's default lamb
               "crop_scale_min": 0.08, "solarize_prob": 0.2,  # augmentations/asymmetric.yaml: view 2
               "jitter_saturation": 0.2},  # asymmetric.yaml: brightness/contrast 0.4, saturation 0.2
    "vicreg": {**_LARS, "batch_size": 256, "lr": 0.3, "weight_decay": 1e-4, "warmup_epochs": 10.0,
               "proj_hidden": 2048, "proj_out": 2048, "vicreg_sim": 25.0, "vicreg_var": 25.0,
               "vicreg_cov": 1.0,  # vicreg.yaml
               "crop_scale_min": 0.2, "solarize_prob": 0.1,  # vicreg.yaml's own augmentations
               "jitter_saturation": 0.2},  # vicreg.yaml: brightness/contrast 0.4, saturation 0.2
}
METHOD_NAMES = tuple(METHOD_RECIPES)
METHOD_TITLES = {"simclr": "SimCLR", "mocov2": "MoCo v2+", "byol": "BYOL", "simsiam": "SimSiam",
                 "barlow": "Barlow Twins", "vicreg": "VICReg"}  # as papers and tables name them
RECIPE_FIELDS = tuple(dict.fromkeys(SHARED_RECIPE + sum(METHOD_FIELDS.values(), ())))
# The fields the methods brought stay out of the fingerprint at SimCLR's values, so SimCLR run
# folders written before them are still found finished.
LATER_FIELDS.update({"method": "simclr", **{f: METHOD_RECIPES["simclr"].get(f) for f in RECIPE_FIELDS
                                            if f not in ("batch_size", "optimizer", "lr", "weight_decay",
                                                         "warmup_epochs", "proj_hidden", "proj_out",
                                                         "proj_bn", "temperature", "crop_scale_min")}})


class ConfigError(SimpleCLRError, ValueError):
    """A bad configuration value; the message is one line saying what is wrong and what to do."""


def _fail(cfg: Any, name: str, allowed: str) -> None:
    value = repr(getattr(cfg, name))  # a value can be any length: the line shows its head
    shown = value if len(value) <= 80 else value[:77] + "..."
    raise ConfigError(f"{type(cfg).__name__}.{name}={shown} is invalid: {allowed}")


@functools.lru_cache(maxsize=None)
def _field_types(cls: type) -> dict[str, tuple[Any, bool]]:
    """Each field's (type, optional): ``Optional[X]`` as (X, True), ``Tuple[float, ...]`` as
    (tuple, False). Worked out once per class: ``typing.get_type_hints`` re-evaluates every
    annotation of the class and its bases on each call (31 ms a config, 5 minutes of checks for
    a 10,000-run plan)."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) is typing.Union and type(None) in args
        if optional:
            hint = next(a for a in args if a is not type(None))
        out[name] = (tuple if typing.get_origin(hint) in (tuple, Tuple) else hint, optional)
    return out


def _check_encoder_shape(cfg: Any) -> None:
    """The encoder fields every stage that builds or loads one shares: its stem and width."""
    if cfg.stem not in STEMS:
        _fail(cfg, "stem", f"use one of {STEMS}")
    if not 1 <= cfg.width <= 256:
        _fail(cfg, "width", f"use an integer in [1, 256] ({RESNET18_WIDTH} is ResNet-18)")


@dataclass(frozen=True)
class StageConfig:
    """Fields and checks every stage shares: data, seed, device and numerics."""

    stage: ClassVar[str] = "stage"

    dataset: str = "cifar100"
    data_dir: Optional[str] = None
    image_size: Optional[int] = None
    accept_checksum: Optional[str] = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    num_threads: Optional[int] = None
    progress: bool = True
    # A command that starts the stage in several processes, e.g. "torchrun --nproc-per-node 4":
    # a notebook (or plan) then runs the stage through it and shows its log. None: this process.
    launcher: Optional[str] = None
    # 0: the real run. N > 0: a rehearsal of it (``simpleclr plan rehearse``): batches and
    # evaluation passes of at most N images, two epochs of one step with a checkpoint and a resume
    # between them; every other field as the real run has it.
    rehearsal: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            self._check_type(f)
        if not self.dataset.strip():
            _fail(self, "dataset", "name a dataset, e.g. cifar100 (see `simpleclr data list`)")
        if self.image_size is not None and not 8 <= self.image_size <= 512:
            _fail(self, "image_size", "use None (native size) or an integer in [8, 512]")
        if self.seed < 0:
            _fail(self, "seed", "use an integer >= 0")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            _fail(self, "device", f"use one of {DEVICES} or cuda:N")
        if self.precision not in PRECISIONS:
            _fail(self, "precision", f"use one of {PRECISIONS}")
        if self.num_threads is not None and self.num_threads < 1:
            _fail(self, "num_threads", "use None (all cores) or an integer >= 1")
        if self.rehearsal < 0:
            _fail(self, "rehearsal", "use 0 (the real run) or a number of images > 0 (a rehearsal)")
        if self.launcher is not None:
            try:
                words = shlex.split(self.launcher)
            except ValueError as e:
                _fail(self, "launcher", f"it does not parse as a command line ({e})")
            if not words:
                _fail(self, "launcher", 'use None or a command, e.g. "torchrun --nproc-per-node 2"')
        self.validate()

    def validate(self) -> None:
        """Stage-specific checks; subclasses override."""

    def _check_type(self, f: dataclasses.Field) -> None:
        value = getattr(self, f.name)
        hint, optional = _field_types(type(self))[f.name]
        if optional and value is None:
            return
        if hint is tuple:
            if not isinstance(value, (tuple, list)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
            ):
                _fail(self, f.name, "use a list of numbers")
            if not all(math.isfinite(v) for v in value):
                _fail(self, f.name, "use finite numbers (no NaN or infinity)")
            object.__setattr__(self, f.name, tuple(float(v) for v in value))
            return
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(self, f.name, float(value))
            return
        if hint is float and isinstance(value, float) and not math.isfinite(value):
            _fail(self, f.name, "use a finite number (no NaN or infinity)")
        if hint is bool and not isinstance(value, bool):
            _fail(self, f.name, "use true or false")
        if hint is int and (not isinstance(value, int) or isinstance(value, bool)):
            _fail(self, f.name, "use an integer")
        if hint is float and not isinstance(value, float):
            _fail(self, f.name, "use a number")
        if hint is str and not isinstance(value, str):
            _fail(self, f.name, "use a string")

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls: Type[T], d: dict) -> T:
        """Build from a dict (a notebook's parameters, a plan row, a config.json); unknown keys fail."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(map(str, set(d) - names))
        if unknown:
            shown = ", ".join(u if len(u) <= 40 else u[:37] + "..." for u in unknown[:5])
            more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
            raise ConfigError(
                f"{cls.__name__} has no field {shown}{more}; valid fields: {', '.join(sorted(names))}"
            )
        return cls(**d)

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)

    def fingerprint(self) -> str:
        """Hash of what the run computes (runtime-only fields left out): equal means "same run"."""
        d = {k: v for k, v in self.to_dict().items()
             if k not in RUNTIME_FIELDS and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
        return hashlib.sha256(json.dumps([self.stage, d], sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainingConfig(StageConfig):
    """Fields and checks the training stages share (SimCLR pretraining, supervised training): the
    training images, the schedule, the optimizer and checkpointing.

    ``batch_size``, ``optimizer``, ``lr``, ``weight_decay`` and ``warmup_epochs`` are each stage's
    recipe: every stage declares them again with its own default (a field declared again keeps its
    place in the field order). ``build_optimizer`` and the schedule read a ``TrainingConfig``.
    """

    # Batch norm across processes when sync_bn is None and the run has several (train.uses_sync_bn)
    SYNC_BN_DEFAULT: ClassVar[bool] = False

    split: str = "train"
    subset_fraction: float = 1.0  # a class-balanced share of the split, drawn with subset_seed
    subset_seed: int = 0
    stem: str = "cifar"
    width: int = RESNET18_WIDTH  # the encoder's first-stage channels; 16 checks plumbing cheaply
    epochs: int = 100
    steps: Optional[int] = None  # when set, train for exactly this many steps (equal-compute rows)
    batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.1  # per 256 images under the linear rule
    lr_scaling: str = "linear"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: float = 5.0
    grad_clip: Optional[float] = None
    val_fraction: float = 0.1  # held out from the training split to watch or validate the run
    checkpoint_every: int = 1
    sync_bn: Optional[bool] = None  # None: the stage's own choice, SYNC_BN_DEFAULT

    def validate(self) -> None:
        """The shared checks; a stage's ``validate`` calls this first, then adds its own."""
        if self.epochs < 1:
            _fail(self, "epochs", "use an integer >= 1")
        if self.steps is not None and self.steps < 1:
            _fail(self, "steps", "use None (train for `epochs`) or an integer >= 1")
        if self.batch_size < 1:
            _fail(self, "batch_size", "use an integer >= 1")
        if self.optimizer not in OPTIMIZERS:
            _fail(self, "optimizer", f"use one of {OPTIMIZERS}")
        if self.lr_scaling not in LR_SCALINGS:
            _fail(self, "lr_scaling", f"use one of {LR_SCALINGS}")
        if not 0.0 < self.lr <= 100.0:
            _fail(self, "lr", "use a value in (0, 100]")
        if not 0.0 <= self.weight_decay <= 1.0:
            _fail(self, "weight_decay", "use a value in [0, 1]")
        if not 0.0 <= self.momentum < 1.0:
            _fail(self, "momentum", "use a value in [0, 1)")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            _fail(self, "warmup_epochs", f"use a value in [0, epochs={self.epochs}]")
        if self.grad_clip is not None and self.grad_clip <= 0:
            _fail(self, "grad_clip", "use None (off) or a value > 0")
        if self.checkpoint_every < 1:
            _fail(self, "checkpoint_every", "use an integer >= 1 (epochs)")
        _check_encoder_shape(self)
        if not 0.0 < self.subset_fraction <= 1.0:
            _fail(self, "subset_fraction", "use a fraction in (0, 1]")
        if not 0.0 <= self.val_fraction < 1.0:
            _fail(self, "val_fraction", "use a fraction in [0, 1)")

    def run_steps(self, steps_per_epoch: int) -> int:
        """How many optimizer steps the run takes at ``steps_per_epoch``: ``steps`` when set (rows
        given equal compute, the size study), else ``epochs`` of them."""
        return self.steps or self.epochs * steps_per_epoch


@dataclass(frozen=True)
class PretrainConfig(TrainingConfig):
    """Self-supervised pretraining by ``method``. Every recipe field left at None takes the
    method's published CIFAR recipe (:data:`METHOD_RECIPES`: SimCLR's from google-research/simclr,
    ``run.py --train_batch_size 512 --learning_rate 1.0 --weight_decay 1e-4 --temperature 0.5
    --color_jitter_strength 0.5``, LARS, lr x B/256, why not the paper's ImageNet settings:
    docs/evidence.md; the others' from solo-learn); a field of another method is refused.
    ``subset_fraction`` is the size study's share, ``val_fraction`` the kNN monitor's held-out
    part, ``sync_bn`` None means on with several processes (global BN).
    """

    stage: ClassVar[str] = "pretrain"
    # SimCLR's "global BN": per-device statistics let the contrastive task cheat on them
    SYNC_BN_DEFAULT: ClassVar[bool] = True

    method: str = "simclr"  # the self-supervised method (training.methods); its recipe fills None fields

    # The recipe: TrainingConfig's fields and the methods' own, None = the method's (METHOD_RECIPES).
    batch_size: Optional[int] = None
    optimizer: Optional[str] = None
    lr: Optional[float] = None  # per 256 images under the linear rule
    weight_decay: Optional[float] = None
    warmup_epochs: Optional[float] = None

    proj_hidden: Optional[int] = None
    proj_out: Optional[int] = None
    proj_bn: Optional[bool] = None
    temperature: Optional[float] = None
    jitter_strength: float = 0.5  # every method: brightness/contrast 0.8s = 0.4, hue 0.2s = 0.1
    jitter_saturation: Optional[float] = None  # None: 0.8s like the others (SimCLR, MoCo, SimSiam)
    crop_scale_min: Optional[float] = None
    blur_prob: Optional[float] = None  # None: the method's rule by image size (0 below 64 px)
    solarize_prob: Optional[float] = None  # the second view's (BYOL, Barlow) or both (VICReg)
    pred_hidden: Optional[int] = None
    queue_size: Optional[int] = None
    tau_base: Optional[float] = None
    tau_final: Optional[float] = None
    barlow_lambda: Optional[float] = None
    barlow_scale: Optional[float] = None
    vicreg_sim: Optional[float] = None
    vicreg_var: Optional[float] = None
    vicreg_cov: Optional[float] = None
    lars_eta: Optional[float] = None
    lars_clip: Optional[bool] = None
    knn_every: int = 10  # epochs between kNN monitor evaluations; 0 turns it off
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_max_bank: int = 10000
    # epochs after which the encoder is kept as checkpoints/epoch<N>.pt (a length series probes
    # them); () keeps only the final one
    keep_epochs: Tuple[float, ...] = ()

    def __post_init__(self) -> None:
        """The method's recipe fills the fields left at None, before any check."""
        if self.method not in METHOD_NAMES:
            _fail(self, "method", f"use one of {', '.join(METHOD_NAMES)}")
        own = set(SHARED_RECIPE) | set(METHOD_FIELDS[self.method])
        for name in RECIPE_FIELDS:
            value = getattr(self, name)
            if name not in own and value is not None:
                raise ConfigError(f"PretrainConfig.{name}={value!r} means nothing for method="
                                  f"{self.method!r}: remove it (that method's own fields: "
                                  f"{', '.join(METHOD_FIELDS[self.method]) or 'none'})")
            if name in own and value is None:
                object.__setattr__(self, name, METHOD_RECIPES[self.method].get(name))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        if any(e < 1 or e != int(e) or (self.steps is None and e > self.epochs) for e in self.keep_epochs):
            _fail(self, "keep_epochs", f"use whole epochs in [1, epochs={self.epochs}]")
        if self.proj_hidden < 1 or self.proj_out < 1:
            _fail(self, "proj_hidden" if self.proj_hidden < 1 else "proj_out", "use an integer >= 1")
        if self.batch_size < 2:
            _fail(self, "batch_size", "batch statistics and negatives need two images: use an integer >= 2")
        if self.temperature is not None and not 0.01 <= self.temperature <= 10.0:
            _fail(self, "temperature", "use a value in [0.01, 10]")
        self._check_method_fields()
        if not 0.0 <= self.jitter_strength <= 2.0:
            _fail(self, "jitter_strength", "use a value in [0, 2]")
        if not 0.0 < self.crop_scale_min <= 1.0:
            _fail(self, "crop_scale_min", "use a value in (0, 1]")
        if self.jitter_saturation is not None and not 0.0 <= self.jitter_saturation <= 1.0:
            _fail(self, "jitter_saturation", "use None (0.8 x jitter_strength) or a value in [0, 1]")
        if self.blur_prob is not None and not 0.0 <= self.blur_prob <= 1.0:
            _fail(self, "blur_prob", "use None (automatic) or a probability in [0, 1]")
        if self.solarize_prob is not None and not 0.0 <= self.solarize_prob <= 1.0:
            _fail(self, "solarize_prob", "use None (the method's) or a probability in [0, 1]")
        if self.knn_every < 0 or self.knn_k < 1 or self.knn_max_bank < 1:
            _fail(self, "knn_every" if self.knn_every < 0 else "knn_k", "use non-negative integers (knn_k >= 1)")
        if not 0.0 < self.knn_temperature <= 10.0:
            _fail(self, "knn_temperature", "use a value in (0, 10]")


    def _check_method_fields(self) -> None:
        """The ranges of the methods' own fields (None where the method has no use for one)."""
        positive_int = {"pred_hidden": self.pred_hidden, "queue_size": self.queue_size}
        for name, v in positive_int.items():
            if v is not None and v < 1:
                _fail(self, name, "use an integer >= 1")
        if self.tau_base is not None and not 0.0 <= self.tau_base <= self.tau_final <= 1.0:
            _fail(self, "tau_base", f"use 0 <= tau_base <= tau_final={self.tau_final} <= 1")
        for name in ("barlow_lambda", "barlow_scale", "vicreg_sim", "vicreg_var", "vicreg_cov", "lars_eta"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1e3:
                _fail(self, name, "use a value in [0, 1000]")


@dataclass(frozen=True)
class SupervisedConfig(TrainingConfig):
    """Supervised training from scratch, or fine-tuning when ``init`` names an encoder.

    Of :class:`TrainingConfig`'s fields, ``subset_fraction`` is the label budget: this
    class-balanced share of the split, then ``val_fraction`` of it held out (evaluated every epoch;
    test only at the end), both drawn with ``subset_seed``: the probes' label_fraction / label_seed
    rule (``data.labelled_split``). ``sync_bn`` None means off (per-process statistics, as
    supervised recipes do).
    """

    stage: ClassVar[str] = "supervised"

    # The recipe (TrainingConfig's fields, with the supervised defaults).
    batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.1  # per 256 images under the linear rule
    weight_decay: float = 5e-4
    warmup_epochs: float = 5.0

    init: Optional[str] = None  # None (from scratch), "imagenet", or a run folder / checkpoint path
    encoder_lr_scale: float = 1.0  # fine-tuning: encoder lr = lr x this (unless the grid chooses it)
    # Fine-tuning: the encoder lr scales tried, each in a trial of trial_epochs scored on the
    # validation split (never on test); the best becomes encoder_lr_scale for the real run. Empty:
    # encoder_lr_scale as given; one value: that value, without trials.
    encoder_lr_grid: Tuple[float, ...] = ()
    trial_epochs: int = 20  # each trial's length (at most epochs), its schedule compressed to it
    nesterov: bool = True
    label_smoothing: float = 0.0
    crop_padding: int = 4

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.encoder_lr_scale <= 10.0:
            _fail(self, "encoder_lr_scale", "use a value in [0, 10] (0 freezes the encoder)")
        if any(not 0.0 <= v <= 10.0 for v in self.encoder_lr_grid):
            _fail(self, "encoder_lr_grid", "use values in [0, 10] (0 freezes the encoder)")
        if self.encoder_lr_grid and self.init is None:
            _fail(self, "encoder_lr_grid", "it tunes fine-tuning: set init, or leave the grid empty")
        if len(set(self.encoder_lr_grid)) > 1 and self.steps is not None:
            _fail(self, "steps", "the encoder lr trials are sized in epochs: use steps None with a grid")
        if len(set(self.encoder_lr_grid)) > 1 and self.val_fraction == 0:
            _fail(self, "encoder_lr_grid", "the choice is made on validation: use val_fraction > 0")
        if self.trial_epochs < 1:
            _fail(self, "trial_epochs", "use an integer >= 1")
        if not 0.0 <= self.label_smoothing < 1.0:
            _fail(self, "label_smoothing", "use a value in [0, 1)")
        if not 0 <= self.crop_padding <= 16:
            _fail(self, "crop_padding", "use an integer in [0, 16]")


@dataclass(frozen=True)
class LinearEvalConfig(StageConfig):
    """The linear classification protocol on frozen features."""

    stage: ClassVar[str] = "linear_eval"

    encoder: str = "random"  # "random", "imagenet", or a run folder / checkpoint path
    stem: str = "cifar"  # for "random" only; others read it from the checkpoint
    width: int = RESNET18_WIDTH  # the encoder's first-stage channels: builds "random", others must have it
    label_fraction: float = 1.0
    label_seed: int = 0
    # The weight decay is chosen by val_folds-fold cross-validation over all the labelled images
    # (class-balanced folds drawn with label_seed), never on test; 1: on one held-out val_fraction
    # of them. At 10% of CIFAR-100's labels one split holds 500 images, 5 a class, and its choice
    # moved a random encoder's probe by 1.4 points (docs/evidence.md): the folds pool 5,000.
    val_folds: int = 5
    val_fraction: float = 0.1
    probe_layer: str = "encoder"  # "projection": a SimCLR checkpoint's head output g(h) instead of h
    # L2 penalties tried (chosen on validation as above, never on test): SimCLR's
    # Appendix B.8 grid, 45 log-spaced values from 1e-6 to 1e5, warm-started from the strongest
    # down (its cost and effect against a short grid: docs/evidence.md)
    weight_decays: Tuple[float, ...] = PROBE_WEIGHT_DECAYS
    probe_max_iter: int = 500  # L-BFGS iterations per fit (full batch: no epochs, batch size or lr)
    feature_batch_size: int = 512
    save_features: bool = True

    def validate(self) -> None:
        if not self.encoder.strip():
            _fail(self, "encoder", 'use "random", "imagenet" or a run folder / checkpoint path')
        _check_encoder_shape(self)
        if not 0.0 < self.label_fraction <= 1.0:
            _fail(self, "label_fraction", "use a fraction in (0, 1]")
        if not 0.0 < self.val_fraction < 1.0:
            _fail(self, "val_fraction", "use a fraction in (0, 1): weight decay is chosen on it, never on test")
        if self.val_folds < 1:
            _fail(self, "val_folds", "use an integer >= 1 (1: one held-out val_fraction; k: k-fold cross-validation)")
        if self.probe_layer not in PROBE_LAYERS:
            _fail(self, "probe_layer", f"use one of {PROBE_LAYERS}")
        if self.probe_layer == "projection" and self.encoder.strip().split(":")[0] in ("random", "imagenet"):
            _fail(self, "probe_layer",
                  "only a SimCLR checkpoint has a projection head: use encoder, or name a pretraining run")
        if not self.weight_decays or any(w < 0 for w in self.weight_decays):
            _fail(self, "weight_decays", "use a non-empty list of values >= 0")
        if self.probe_max_iter < 1:
            _fail(self, "probe_max_iter", "use an integer >= 1")
        if self.feature_batch_size < 1:
            _fail(self, "feature_batch_size", "use an integer >= 1")


def encoder_lr_grid(cfg: SupervisedConfig) -> tuple[float, ...]:
    """The encoder lr scales a run chooses from, sorted: the grid, else ``encoder_lr_scale`` alone."""
    return tuple(sorted(set(cfg.encoder_lr_grid))) or (cfg.encoder_lr_scale,)


# ---- the stage registry: every name a stage goes by, in one place -----------------------------
@dataclass(frozen=True)
class StageCommand:
    """A ``simpleclr`` subcommand that runs a stage."""

    name: str  # "pretrain", "supervised", "finetune", "linear-eval"
    help: str
    needs_init: bool = False  # refused without --init; the command of a config that sets init


@dataclass(frozen=True)
class Stage:
    """One stage of the study: its config class, the library function that runs it, its notebook
    and its CLI subcommands. The CLI, the launcher, plans and :func:`config_from_dict` all read
    :data:`REGISTRY`, so adding or renaming a stage is one entry here."""

    config: Type[StageConfig]
    # "package.module:function", called as function(cfg, out_dir) -> result. An import path, not an
    # import: the stage modules import config, so importing them here would be a cycle.
    entry: str
    notebook: str  # notebooks/<notebook>.ipynb, also what a plan's run names as its notebook
    commands: Tuple[StageCommand, ...]

    @property
    def name(self) -> str:
        """The stage's own name: config.json's ``stage``, ``cfg.stage``."""
        return self.config.stage

    def command_for(self, cfg: StageConfig) -> StageCommand:
        """The subcommand that runs ``cfg``: ``finetune`` for a supervised config with ``init``."""
        init = bool(getattr(cfg, "init", None))
        return next((c for c in self.commands if c.needs_init == init), self.commands[0])


REGISTRY: Tuple[Stage, ...] = (
    Stage(PretrainConfig, "simpleclr.training.stages.pretrain:pretrain", "pretrain",
          (StageCommand("pretrain", "SimCLR pretraining"),)),
    Stage(SupervisedConfig, "simpleclr.training.stages.supervised:train_supervised", "supervised",
          (StageCommand("supervised", "supervised training from scratch"),
           StageCommand("finetune", "supervised fine-tuning from an encoder (--init)", needs_init=True))),
    Stage(LinearEvalConfig, "simpleclr.training.stages.linear_eval:linear_eval_on_one_rank", "linear_eval",
          (StageCommand("linear-eval", "linear probe on frozen features"),)),
)
STAGES: dict[str, Type[StageConfig]] = {s.name: s.config for s in REGISTRY}


def get_stage(name: str) -> Stage:
    """The registry entry of the stage called ``name`` ("pretrain", "supervised", "linear_eval")."""
    for s in REGISTRY:
        if s.name == name:
            return s
    raise ConfigError(f"unknown stage {name!r}; use one of {', '.join(STAGES)}")


def stage_of(cfg: StageConfig) -> Stage:
    """The registry entry of ``cfg``'s stage."""
    return get_stage(cfg.stage)


def notebook_stage(notebook: str) -> Optional[Stage]:
    """The stage ``notebooks/<notebook>.ipynb`` runs, None for a notebook that runs no stage."""
    return next((s for s in REGISTRY if s.notebook == notebook), None)


def config_from_dict(stage: str, d: dict) -> StageConfig:
    """The config of ``stage`` ("pretrain", "supervised", "linear_eval") from a dict."""
    return get_stage(stage).config.from_dict(d)
