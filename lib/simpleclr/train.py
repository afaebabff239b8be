"""The training stages: SimCLR pretraining and supervised training (fine-tuning is a case of it).

Both are plain loops over a uint8 image tensor that lives on the training device: each step indexes
a batch, augments it there (per-sample parameters), runs one forward pass in the runtime's
precision and memory format, and steps the optimizer and the per-iteration schedule. No data-loader
workers, no per-step host copies, and no host synchronisation per step on accelerators.

A run writes one folder (:class:`simpleclr.runs.RunDir`): started again it resumes from
``checkpoints/last.pt`` and ends with the same weights as an uninterrupted run (bit-identical on
CPU); a finished run returns its stored result. Order of the data and of the augmentation is drawn
from generators seeded per (seed, epoch), so an epoch is the same whether or not the run was resumed.
"""
from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import augment as augment_mod
from . import data as data_mod
from . import distributed, evaluate, launch, models
from .config import ConfigError, PretrainConfig, StageConfig, SupervisedConfig, encoder_lr_grid
from .device import Runtime, eval_mode, resolve_runtime, seed_everything
from .errors import SimpleCLRError
from .losses import nt_xent
from .optim import build_optimizer, scaled_lr, warmup_cosine_scheduler
from .runs import RunDir, RunLocked

__all__ = ["TrainingDiverged", "simclr_step", "supervised_step", "pretrain_simclr",
           "train_supervised", "SimCLRParts", "SupervisedParts", "build_simclr", "build_supervised",
           "default_blur_prob"]

PathLike = Union[str, Path]
# On accelerators the loss is read back (a host sync) only this often: the NaN/Inf guard and the
# progress bar look at sums accumulated on the device in between.
SYNC_EVERY = 25
PROGRESS_EVERY_S = 5.0  # how often rank 0 rewrites progress.json for a watching plan


class TrainingDiverged(SimpleCLRError, RuntimeError):
    """The loss or the gradient became NaN/Inf; the last good checkpoint is kept untouched."""


# ---- the steps (what the loops run and ``simpleclr bench`` times) ---------------------------
def _grad_norm(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _finish_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                 scheduler: Optional[torch.optim.lr_scheduler.LRScheduler],
                 scaler: Optional[torch.amp.GradScaler], grad_clip: Optional[float],
                 check_finite: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """backward -> NaN/Inf guard -> optional clipping -> optimizer step -> schedule step."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip is not None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        grad_norm = _grad_norm(optimizer)
    if check_finite:  # a host sync: the loops ask for it on CPU, where it costs nothing
        # Under fp16 an Inf gradient is the scaler's business (it skips that step); the loss is ours.
        bad = not bool(torch.isfinite(loss)) or (scaler is None and not bool(torch.isfinite(grad_norm)))
        if bad:
            raise TrainingDiverged(f"loss={float(loss.detach()):.4g}, grad_norm={float(grad_norm):.4g}")
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach(), grad_norm.detach()


def _channels_last(x: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if runtime.channels_last else x


def simclr_step(model: nn.Module, augment: "augment_mod.SimCLRAugment",
                optimizer: torch.optim.Optimizer,
                scheduler: Optional[torch.optim.lr_scheduler.LRScheduler], runtime: Runtime,
                images: torch.Tensor, generator: torch.Generator, temperature: float,
                scaler: Optional[torch.amp.GradScaler] = None, grad_clip: Optional[float] = None,
                check_finite: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One SimCLR iteration on a uint8 batch already on the device; returns (loss, grad_norm).

    Two views per image, one forward pass over the 2B concatenated views (BN sees both), NT-Xent
    over the (DDP-gathered) projections in float32 (or float64). Both results are detached device tensors: the
    caller decides when to read them. ``check_finite`` syncs and raises :class:`TrainingDiverged`
    before the optimizer steps on a NaN/Inf loss or gradient.
    """
    optimizer.zero_grad(set_to_none=True)
    v1, v2 = augment.two_views(images, generator)
    x = _channels_last(torch.cat([v1, v2]), runtime)
    with runtime.autocast():
        z = model(x)
    z1, z2 = _loss_dtype(z).chunk(2)
    loss = nt_xent(distributed.gather_with_grad(z1), distributed.gather_with_grad(z2), temperature)
    return _finish_step(loss, optimizer, scheduler, scaler, grad_clip, check_finite)


def _loss_dtype(t: torch.Tensor) -> torch.Tensor:
    """The loss's input in float32 at least: bf16/fp16 activations are upcast, float64 (the
    numerical equivalence tests) stays float64."""
    return t if t.dtype == torch.float64 else t.float()


def supervised_step(model: nn.Module, augment: "augment_mod.SupervisedAugment",
                    optimizer: torch.optim.Optimizer,
                    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler], runtime: Runtime,
                    images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                    label_smoothing: float = 0.0, scaler: Optional[torch.amp.GradScaler] = None,
                    grad_clip: Optional[float] = None,
                    check_finite: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One supervised iteration (crop + flip, cross-entropy in float32); returns (loss, grad_norm)."""
    optimizer.zero_grad(set_to_none=True)
    x = _channels_last(augment(images, generator), runtime)
    with runtime.autocast():
        logits = model(x)
    loss = F.cross_entropy(_loss_dtype(logits), labels, label_smoothing=label_smoothing)
    return _finish_step(loss, optimizer, scheduler, scaler, grad_clip, check_finite)


# ---- seeded order (DDP-ready: every rank draws the same permutation and takes its shard) ------
def _seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


_DATA_STREAM, _AUG_STREAM = 1, 2


def _epoch_indices(n: int, epoch: int, seed: int, batch_size: int, world: distributed.World,
                   device: torch.device) -> torch.Tensor:
    """This rank's sample order for ``epoch``: a seeded permutation, full batches only, on device."""
    gen = torch.Generator().manual_seed(_seed_of(seed, _DATA_STREAM, epoch))
    order = torch.randperm(n, generator=gen)
    return distributed.shard(order, world, batch_size).to(device, non_blocking=True)


def _augment_generator(seed: int, epoch: int, rank: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(_seed_of(seed, _AUG_STREAM, epoch, rank))


# ---- shared pieces --------------------------------------------------------------------------
def default_blur_prob(image_size: int, blur_prob: Optional[float]) -> float:
    """SimCLR's Gaussian blur only pays at larger images: off below 64 px, p=0.5 from 64 px."""
    if blur_prob is not None:
        return blur_prob
    return 0.0 if image_size < 64 else 0.5


def _runtime(cfg: StageConfig) -> Runtime:
    runtime = resolve_runtime(cfg.device, cfg.precision, cfg.channels_last, cfg.num_threads)
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return runtime


def _world(runtime: Runtime) -> distributed.World:
    """This process's place in the job: under torchrun it joins the process group (NCCL on GPUs,
    gloo on CPU); every rank holds the whole uint8 training set and takes its slice of each global
    batch, rank 0 alone writes the run folder."""
    return distributed.init_from_env(runtime.device)


def _to_runtime(model: nn.Module, runtime: Runtime) -> nn.Module:
    model = model.to(runtime.device)
    return model.to(memory_format=torch.channels_last) if runtime.channels_last else model


def _schedule(cfg: Any, n_train: int, world: distributed.World) -> tuple[int, int, int, int]:
    """(steps_per_epoch, total_steps, epochs, warmup_steps); fails before compute on a bad fit."""
    name = type(cfg).__name__
    if cfg.batch_size > n_train:
        raise ConfigError(f"{name}.batch_size={cfg.batch_size} is larger than the {n_train} training "
                          "images: lower batch_size (or raise subset_fraction / lower val_fraction)")
    if cfg.batch_size % world.size:
        raise ConfigError(f"{name}.batch_size={cfg.batch_size} is not divisible by the {world.size} "
                          "processes: use a multiple of the world size")
    steps_per_epoch = n_train // cfg.batch_size
    total = getattr(cfg, "steps", None) or cfg.epochs * steps_per_epoch
    epochs = math.ceil(total / steps_per_epoch)
    # Warm-up is the same fraction of the run as warmup_epochs / epochs, whether or not the run
    # counts steps (the size study fixes steps, so small subsets run many epochs).
    warmup = min(total, round(total * cfg.warmup_epochs / cfg.epochs))
    return steps_per_epoch, total, epochs, warmup


def _make_scaler(runtime: Runtime) -> Optional[torch.amp.GradScaler]:
    return torch.amp.GradScaler(runtime.device.type) if runtime.use_grad_scaler else None


def _rng_state(extra: dict[str, torch.Generator]) -> dict:
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


def _set_rng_state(state: dict) -> None:
    """The inverse of :func:`_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def _writer_lock(run: RunDir, world: distributed.World, device: torch.device) -> Iterator[None]:
    """Rank 0 holds the run folder's lock for the block. When another process has it, every rank
    raises :class:`RunLocked` together, so none waits in a collective for a rank 0 that left."""
    with contextlib.ExitStack() as stack:
        refused: Optional[RunLocked] = None
        if world.is_main:
            try:
                stack.enter_context(run.lock())
            except RunLocked as e:
                refused = e
        holder = distributed.from_main(0 if refused is None else (refused.pid or -1), device)
        if holder:
            raise refused or RunLocked(run.path, holder if holder > 0 else None)
        yield


def _pretrain_images(split: "data_mod.Split", val_fraction: float, seed: int, subset_fraction: float,
                     subset_seed: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(train_idx, val_idx or None) for SimCLR: the kNN monitor's val images first, then the size
    study's subset of the rest. Not a label budget (pretraining reads no labels), so not
    ``data.labelled_split``: a fixed monitor set keeps the size study's subsets nested."""
    n = len(split)
    if split.labelled and val_fraction > 0:
        train_idx, val_idx = data_mod.train_val_split(split.labels, val_fraction, seed)
    else:
        train_idx, val_idx = torch.arange(n), None
    if subset_fraction < 1.0:
        train_idx = train_idx[data_mod.stratified_subset(split.labels[train_idx], subset_fraction,
                                                         subset_seed)]
    return train_idx, val_idx


def _load(cfg: Any, split_name: str) -> "data_mod.Split":
    return data_mod.load_split(cfg.dataset, split_name, root=cfg.data_dir, image_size=cfg.image_size,
                               accept_checksum=cfg.accept_checksum)


# ---- the loop both stages share -------------------------------------------------------------
@dataclass
class _Loop:
    """Everything the epoch loop needs; the stages fill it and supply the step and evaluation."""

    cfg: Any
    run: RunDir
    runtime: Runtime
    world: distributed.World
    model: nn.Module  # the plain module (state dicts come from here, never from a compiled wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: Optional[torch.amp.GradScaler]
    step: Callable[[torch.Tensor, torch.Generator, bool], tuple[torch.Tensor, torch.Tensor]]
    evaluate: Callable[[int, bool], dict]  # (epoch index, is last) -> extra metrics
    n_train: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    desc: str
    state: dict = field(default_factory=dict)


_CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "rng", "elapsed_s", "train_s",
                    "images")


def _save_last(loop: _Loop, epoch: int, step: int, clock: dict) -> None:
    loop.run.save_checkpoint({
        "model": loop.model.state_dict(), "optimizer": loop.optimizer.state_dict(),
        "scheduler": loop.scheduler.state_dict(),
        "scaler": loop.scaler.state_dict() if loop.scaler is not None else None,
        "epoch": epoch, "step": step, "rng": _rng_state(loop.state.get("generators", {})),
        "fingerprint": loop.cfg.fingerprint(), **clock})


def _resume(loop: _Loop) -> tuple[int, int, dict]:
    """(completed epochs, step, clock) from checkpoints/last.pt, or a fresh start.

    Every rank loads the same checkpoint (the run folder must be on storage all nodes see); only
    rank 0 rewrites the metrics file.
    """
    clock = {"elapsed_s": 0.0, "train_s": 0.0, "images": 0}
    ckpt = loop.run.load_checkpoint("last", required=_CHECKPOINT_KEYS)
    if ckpt is None:
        if loop.run.metrics_path.exists() and loop.world.is_main:  # killed before a checkpoint
            loop.run.truncate_metrics([])
        return 0, 0, clock
    loop.model.load_state_dict(ckpt["model"])
    loop.optimizer.load_state_dict(ckpt["optimizer"])
    loop.scheduler.load_state_dict(ckpt["scheduler"])
    if loop.scaler is not None and ckpt.get("scaler") is not None:
        loop.scaler.load_state_dict(ckpt["scaler"])
    _set_rng_state(ckpt["rng"])
    if loop.world.is_main:
        loop.run.truncate_metrics([r for r in loop.run.read_metrics()
                                   if r.get("epoch", 0) <= ckpt["epoch"]])
    clock.update({k: ckpt[k] for k in clock})
    return int(ckpt["epoch"]), int(ckpt["step"]), clock


def _progress(loop: _Loop, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=loop.total_steps, initial=initial, desc=loop.desc, unit="step",
                disable=not (loop.cfg.progress and loop.world.is_main), dynamic_ncols=True,
                leave=False)


def _run_loop(loop: _Loop) -> list[dict]:
    """Train from wherever the run folder stands to the end; returns all metrics rows."""
    cfg, dev = loop.cfg, loop.runtime.device
    start_epoch, step, clock = _resume(loop)
    session_start = time.perf_counter() - clock["elapsed_s"]
    sync_each_step = _sync_each_step(dev)
    local_batch = cfg.batch_size // loop.world.size
    bar = _progress(loop, step)
    shown = _show_progress(loop, step, session_start, 0.0)
    try:
        for epoch in range(start_epoch, loop.epochs):
            t0 = time.perf_counter()
            order = _epoch_indices(loop.n_train, epoch, cfg.seed, cfg.batch_size, loop.world, dev)
            gen = _augment_generator(cfg.seed, epoch, loop.world.rank, dev)
            loop.state["generators"] = {"augment": gen}
            n_steps = min(loop.steps_per_epoch, loop.total_steps - step)
            loss_sum = torch.zeros((), device=dev)
            norm_sum = torch.zeros((), device=dev)
            done_steps = 0
            for i in range(n_steps):
                idx = order[i * local_batch:(i + 1) * local_batch]
                if i == n_steps - 1:
                    lr = _main_lr(loop.optimizer)  # the lr this epoch's last step uses
                try:
                    loss, gnorm = loop.step(idx, gen, sync_each_step)
                except TrainingDiverged as e:
                    raise _diverged(loop, step, epoch, str(e)) from None
                loss_sum += loss
                norm_sum += gnorm
                step += 1
                done_steps += 1
                # reading the sums syncs: every step on CPU (free), every SYNC_EVERY elsewhere
                at_sync = sync_each_step or done_steps % SYNC_EVERY == 0 or i == n_steps - 1
                if at_sync and not sync_each_step:
                    _check_sums(loop, step, epoch, loss_sum, norm_sum)
                bar.update(1)
                shown = _show_progress(loop, step, session_start, shown)
                if at_sync and cfg.progress:
                    rate = done_steps * cfg.batch_size / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(loss=f"{float(loss_sum) / done_steps:.4f}",
                                    lr=f"{_main_lr(loop.optimizer):.3g}",
                                    img_s=f"{rate:.0f}", refresh=False)
            mean_loss = float(distributed.all_reduce_mean(loss_sum)) / max(done_steps, 1)
            mean_norm = float(norm_sum) / max(done_steps, 1)
            train_s = time.perf_counter() - t0
            last = epoch == loop.epochs - 1
            extra = loop.evaluate(epoch, last)
            clock["train_s"] += train_s
            clock["images"] += done_steps * cfg.batch_size
            clock["elapsed_s"] = time.perf_counter() - session_start
            row = {"epoch": epoch + 1, "step": step, "loss": mean_loss, "lr": lr,
                   "grad_norm": mean_norm,
                   "seconds": time.perf_counter() - t0,
                   "images_per_s": done_steps * cfg.batch_size / max(train_s, 1e-9), **extra}
            if loop.world.is_main:
                loop.run.log_metrics(row)
                if (epoch + 1) % cfg.checkpoint_every == 0 or last:
                    _save_last(loop, epoch + 1, step, clock)
            distributed.barrier()
    finally:
        bar.close()
    loop.state["clock"] = clock
    return loop.run.read_metrics()


def _show_progress(loop: _Loop, step: int, session_start: float, shown: float) -> float:
    """Rank 0 rewrites the run folder's progress.json at most every PROGRESS_EVERY_S seconds (and
    at the last step), so a plan running this notebook can show where it stands; returns when it
    last wrote."""
    now = time.perf_counter()
    if loop.world.is_main and (now - shown >= PROGRESS_EVERY_S or step == loop.total_steps):
        loop.run.write_progress(step, loop.total_steps, now - session_start)
        return now
    return shown


def _sync_each_step(device: torch.device) -> bool:
    """Check the loss every step where reading it is free (CPU); elsewhere every SYNC_EVERY steps."""
    return device.type == "cpu"


def _main_lr(optimizer: torch.optim.Optimizer) -> float:
    """The lr of the groups outside a fine-tuned encoder (the configured, scaled lr)."""
    groups = [g for g in optimizer.param_groups if not str(g.get("name", "")).startswith("encoder/")]
    return float((groups or optimizer.param_groups)[0]["lr"])


def _check_sums(loop: _Loop, step: int, epoch: int, loss_sum: torch.Tensor,
                norm_sum: torch.Tensor) -> None:
    """The lazy guard: a NaN/Inf anywhere since the epoch began poisons the running sums."""
    ok = bool(torch.isfinite(loss_sum)) and (loop.scaler is not None or bool(torch.isfinite(norm_sum)))
    if not ok:
        raise _diverged(loop, step, epoch, f"loss sum={float(loss_sum):.4g}, grad-norm sum="
                                           f"{float(norm_sum):.4g} since the epoch began")


def _diverged(loop: _Loop, step: int, epoch: int, what: str) -> TrainingDiverged:
    last = loop.run.checkpoint_path("last")
    kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was written yet"
    return TrainingDiverged(f"training diverged at step {step + 1} (epoch {epoch + 1}): {what} is not "
                            f"finite; {kept}: lower lr or enable grad_clip, then run again")


def _summary(rows: list[dict], loop: _Loop) -> dict:
    clock = loop.state["clock"]
    return {"final_loss": rows[-1]["loss"] if rows else None, "epochs": loop.epochs,
            "steps": loop.total_steps, "images_per_s": clock["images"] / max(clock["train_s"], 1e-9),
            "wall_time_s": clock["elapsed_s"],
            "runtime": {**loop.runtime.describe(), "world_size": loop.world.size,
                        "sync_bn": uses_sync_bn(loop.cfg, loop.world)}}


def _last_value(rows: list[dict], key: str) -> Optional[float]:
    values = [r[key] for r in rows if r.get(key) is not None]
    return values[-1] if values else None


# ---- SimCLR ---------------------------------------------------------------------------------
@dataclass
class SimCLRParts:
    """The model, its compiled training form, augmentation, optimizer, schedule and scaler."""

    model: models.SimCLRNet
    train_model: nn.Module
    augment: "augment_mod.SimCLRAugment"
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: Optional[torch.amp.GradScaler]
    lr: float


def uses_sync_bn(cfg: Union[PretrainConfig, SupervisedConfig], world: distributed.World) -> bool:
    """Global batch norm: asked for, or by default for SimCLR on several processes (SimCLR's
    "global BN": per-device statistics let the contrastive task cheat on them)."""
    if not world.distributed:
        return False
    if cfg.sync_bn is not None:
        return cfg.sync_bn
    return isinstance(cfg, PretrainConfig)


def _parallel(model: nn.Module, cfg: Any, runtime: Runtime,
              world: distributed.World) -> tuple[nn.Module, nn.Module]:
    """(plain model, the form the step runs: DDP-wrapped on several processes, then compiled)."""
    if uses_sync_bn(cfg, world):
        model = distributed.convert_sync_batchnorm(model, runtime.device)
    model = _to_runtime(model, runtime)
    train_model = distributed.data_parallel(model, runtime.device, world)
    return model, (torch.compile(train_model) if cfg.compile else train_model)


def build_simclr(cfg: PretrainConfig, runtime: Runtime, *, image_size: int, mean: Any, std: Any,
                 total_steps: int, warmup_steps: int,
                 world: distributed.World = distributed.World()) -> SimCLRParts:
    """Everything one SimCLR step needs, built exactly as :func:`pretrain_simclr` builds it."""
    encoder = models.resnet18_encoder(cfg.stem)
    head = models.ProjectionHead(encoder.feature_dim, cfg.proj_hidden, cfg.proj_out, cfg.proj_bn)
    model, train_model = _parallel(models.SimCLRNet(encoder, head), cfg, runtime, world)
    augment = augment_mod.SimCLRAugment(image_size, mean, std, scale=(cfg.crop_scale_min, 1.0),
                                        jitter_strength=cfg.jitter_strength,
                                        blur_prob=default_blur_prob(image_size, cfg.blur_prob))
    lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling)
    optimizer = build_optimizer(model, cfg, lr)
    scheduler = warmup_cosine_scheduler(optimizer, total_steps, warmup_steps)
    return SimCLRParts(model, train_model, augment, optimizer, scheduler, _make_scaler(runtime), lr)


def _run_stage(cfg: Any, out_dir: PathLike,
               work: Callable[[Any, RunDir, Runtime, distributed.World, PathLike], dict]) -> dict:
    """What every training stage does first: a finished run is returned as it is, a config with a
    ``launcher`` runs under it (torchrun), and otherwise ``work`` runs with the run folder's lock."""
    run = RunDir(out_dir)
    done = run.finished(cfg)
    if done is not None:
        return done
    if launch.wanted(cfg):
        return launch.run_launched(cfg, out_dir)
    runtime = _runtime(cfg)
    world = _world(runtime)
    with _writer_lock(run, world, runtime.device):
        return work(cfg, run, runtime, world, out_dir)


def pretrain_simclr(cfg: PretrainConfig, out_dir: PathLike) -> dict:
    """SimCLR pretraining of a ResNet-18 into the run folder ``out_dir``; returns result.json's dict."""
    return _run_stage(cfg, out_dir, _pretrain)


def _pretrain(cfg: PretrainConfig, run: RunDir, runtime: Runtime, world: distributed.World,
              out_dir: PathLike) -> dict:
    """:func:`pretrain_simclr`'s work, with the run folder's lock held."""
    done = run.finished(cfg)  # another process may have finished it meanwhile
    if done is not None:
        return done
    seed_everything(cfg.seed)
    split = _load(cfg, cfg.split)
    train_idx, val_idx = _pretrain_images(split, cfg.val_fraction, cfg.seed, cfg.subset_fraction,
                                          cfg.subset_seed)
    steps_per_epoch, total, epochs, warmup = _schedule(cfg, len(train_idx), world)
    monitor = cfg.knn_every > 0 and val_idx is not None and len(val_idx) > 0
    if world.is_main:
        run.start(cfg, data=_data_record(split, train_idx, val_idx), device=str(runtime.device))
    dev = runtime.device
    images = split.images[train_idx].to(dev)
    parts = build_simclr(cfg, runtime, image_size=split.image_size, mean=split.mean, std=split.std,
                         total_steps=total, warmup_steps=warmup, world=world)

    def step(idx: torch.Tensor, gen: torch.Generator, check: bool):
        return simclr_step(parts.train_model, parts.augment, parts.optimizer, parts.scheduler,
                           runtime, images[idx], gen, cfg.temperature, parts.scaler, cfg.grad_clip,
                           check)

    if monitor:
        bank_idx = _bank_indices(len(train_idx), cfg.knn_max_bank, cfg.seed)
        bank_images, bank_labels = images[bank_idx.to(dev)], split.labels[train_idx][bank_idx]
        val_images, val_labels = split.images[val_idx].to(dev), split.labels[val_idx]

    def monitor_epoch(epoch: int, last: bool) -> dict:
        if not monitor or not ((epoch + 1) % cfg.knn_every == 0 or last) or not world.is_main:
            return {}
        encoder = parts.model.encoder
        with eval_mode(encoder):
            bank = evaluate.extract_features(encoder, bank_images, split.mean, split.std, runtime)
            queries = evaluate.extract_features(encoder, val_images, split.mean, split.std, runtime)
        return {"knn_top1": evaluate.knn_top1(bank, bank_labels, queries, val_labels, k=cfg.knn_k,
                                              temperature=cfg.knn_temperature,
                                              num_classes=split.num_classes)}

    loop = _Loop(cfg, run, runtime, world, parts.model, parts.optimizer, parts.scheduler,
                 parts.scaler, step, monitor_epoch, len(train_idx), steps_per_epoch, total, epochs,
                 desc="simclr")
    rows = _run_loop(loop)
    result = _summary(rows, loop)
    if world.is_main:
        meta = {"stem": cfg.stem, "mean": split.mean, "std": split.std,
                "image_size": split.image_size,
                "source": {"run": str(out_dir), "stage": "pretrain", "dataset": cfg.dataset,
                           "split": cfg.split, "subset_fraction": cfg.subset_fraction}}
        state = models.encoder_state(parts.model.encoder, meta)
        state["head"] = {k: v.detach().cpu() for k, v in parts.model.head.state_dict().items()}
        path = run.save_checkpoint(state, "final")
        # n_labelled 0: no label reaches the weights (the kNN monitor only reads them)
        result.update({"knn_top1": _last_value(rows, "knn_top1"), "checkpoint": str(path),
                       "n_train": len(train_idx), "n_labelled": 0, "lr": parts.lr})
        run.write_result(result)
    distributed.barrier()
    return run.read_result() or result


def _bank_indices(n: int, max_bank: int, seed: int) -> torch.Tensor:
    """A fixed, seeded choice of at most ``max_bank`` training images for the kNN bank (sorted)."""
    if n <= max_bank:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(_seed_of(seed, 3))
    return torch.randperm(n, generator=gen)[:max_bank].sort().values


def _data_record(split: "data_mod.Split", train_idx: torch.Tensor,
                 val_idx: Optional[torch.Tensor]) -> dict:
    return {**split.provenance, "name": split.name, "split": split.split,
            "image_size": split.image_size, "n_train": len(train_idx),
            "n_val": 0 if val_idx is None else len(val_idx), "mean": list(split.mean),
            "std": list(split.std)}


# ---- supervised (from scratch, or fine-tuning an encoder) -----------------------------------
@dataclass
class SupervisedParts:
    model: models.Classifier
    train_model: nn.Module
    augment: "augment_mod.SupervisedAugment"
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: Optional[torch.amp.GradScaler]
    lr: float
    mean: tuple
    std: tuple
    encoder_meta: dict


def build_supervised(cfg: SupervisedConfig, runtime: Runtime, *, image_size: int, mean: Any, std: Any,
                     num_classes: int, total_steps: int, warmup_steps: int,
                     world: distributed.World = distributed.World()) -> SupervisedParts:
    """Classifier (fresh or from ``cfg.init``), augmentation, optimizer and schedule."""
    if cfg.init is None:
        encoder, meta = models.resnet18_encoder(cfg.stem), {"stem": cfg.stem, "source": "scratch"}
    else:
        encoder, meta = models.load_encoder(cfg.init, stem=cfg.stem)
    if meta.get("mean") is not None and meta.get("std") is not None:
        mean, std = tuple(meta["mean"]), tuple(meta["std"])  # the normalisation it was trained with
    model = models.Classifier(encoder, num_classes, freeze_encoder=cfg.encoder_lr_scale == 0)
    model, train_model = _parallel(model, cfg, runtime, world)
    augment = augment_mod.SupervisedAugment(image_size, mean, std, padding=cfg.crop_padding)
    lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling)
    optimizer = build_optimizer(model, cfg, lr)
    scheduler = warmup_cosine_scheduler(optimizer, total_steps, warmup_steps)
    return SupervisedParts(model, train_model, augment, optimizer, scheduler, _make_scaler(runtime),
                           lr, tuple(mean), tuple(std), meta)


def _classify(model: models.Classifier, images: torch.Tensor, labels: torch.Tensor, mean: Any,
              std: Any, runtime: Runtime) -> dict[str, float]:
    """Top-1 / top-5 (percent) of ``model`` on uint8 images, in eval mode, without augmentation."""
    with eval_mode(model):
        feats = evaluate.extract_features(model.encoder, images, mean, std, runtime)
        with torch.no_grad():
            logits = model.fc(feats.to(model.fc.weight.device, model.fc.weight.dtype))
    return evaluate.topk_accuracy(logits.cpu(), labels.cpu(), ks=(1, 5))


def _fit_supervised(cfg: SupervisedConfig, run: RunDir, split: "data_mod.Split",
                    labelled: "data_mod.LabelledSplit", runtime: Runtime, world: distributed.World,
                    encoder_lr_scale: float) -> tuple[SupervisedParts, list[dict], _Loop]:
    """Train on ``labelled.fit``, validating on ``labelled.val`` every epoch, into ``run``.

    Seeded here, so a trial and the real run start exactly as a lone run of their config would.
    """
    seed_everything(cfg.seed)
    steps_per_epoch, total, epochs, warmup = _schedule(cfg, len(labelled.fit), world)
    dev = runtime.device
    images = split.images[labelled.fit].to(dev)
    labels = split.labels[labelled.fit].to(dev)
    parts = build_supervised(cfg.replace(encoder_lr_scale=encoder_lr_scale), runtime,
                             image_size=split.image_size, mean=split.mean, std=split.std,
                             num_classes=split.num_classes, total_steps=total,
                             warmup_steps=warmup, world=world)

    def step(idx: torch.Tensor, gen: torch.Generator, check: bool):
        return supervised_step(parts.train_model, parts.augment, parts.optimizer, parts.scheduler,
                               runtime, images[idx], labels[idx], gen, cfg.label_smoothing,
                               parts.scaler, cfg.grad_clip, check)

    has_val = len(labelled.val) > 0
    if has_val:
        val_images, val_labels = split.images[labelled.val].to(dev), split.labels[labelled.val]

    def validate(epoch: int, last: bool) -> dict:
        if not has_val or not world.is_main:
            return {}
        acc = _classify(parts.model, val_images, val_labels, parts.mean, parts.std, runtime)
        return {"val_top1": acc["top1"], "val_top5": acc["top5"]}

    loop = _Loop(cfg, run, runtime, world, parts.model, parts.optimizer, parts.scheduler,
                 parts.scaler, step, validate, len(labelled.fit), steps_per_epoch, total, epochs,
                 desc="finetune" if cfg.init else "supervised")
    return parts, _run_loop(loop), loop


def _trial_config(cfg: SupervisedConfig, scale: float) -> SupervisedConfig:
    """The short run that scores one encoder lr scale: ``trial_epochs`` (at most ``epochs``), the
    warm-up the same share of it, everything else as the real run."""
    epochs = min(cfg.trial_epochs, cfg.epochs)
    return cfg.replace(encoder_lr_grid=(), encoder_lr_scale=scale, epochs=epochs,
                       warmup_epochs=cfg.warmup_epochs * epochs / cfg.epochs)


def _run_trial(cfg: SupervisedConfig, out_dir: Path, split: "data_mod.Split",
               labelled: "data_mod.LabelledSplit", runtime: Runtime,
               world: distributed.World) -> dict:
    """One trial in its own run folder (resumable, finished ones reused); its validation figures.

    Trials never look at the test split: their result holds validation accuracy only.
    """
    run = RunDir(out_dir)
    done = run.finished(cfg)
    if done is None:
        if world.is_main:
            run.start(cfg, data={"labels": labelled.record()}, device=str(runtime.device))
        _, rows, loop = _fit_supervised(cfg, run, split, labelled, runtime, world,
                                        cfg.encoder_lr_scale)
        if world.is_main:
            run.write_result({"val_top1": _last_value(rows, "val_top1"),
                              "val_top5": _last_value(rows, "val_top5"), "epochs": loop.epochs,
                              "wall_time_s": loop.state["clock"]["elapsed_s"]})
            run.checkpoint_path("last").unlink(missing_ok=True)  # done: only its figures are kept
        distributed.barrier()
        done = run.read_result() or {}
    return {"encoder_lr_scale": cfg.encoder_lr_scale, "val_top1": done["val_top1"],
            "val_top5": done["val_top5"], "epochs": done["epochs"],
            "wall_time_s": done["wall_time_s"]}


def _choose_encoder_lr(cfg: SupervisedConfig, out_dir: Path, split: "data_mod.Split",
                       labelled: "data_mod.LabelledSplit", runtime: Runtime,
                       world: distributed.World) -> dict:
    """The encoder lr scale for the real run, chosen on validation, with the evidence.

    A grid of one value is used as it is (no trials). Otherwise each value gets a trial
    (``<out_dir>/trials/encoder_lr<value>``) and :func:`evaluate.best_on_validation` picks the scale.
    """
    grid = encoder_lr_grid(cfg)
    choice = {"encoder_lr_grid": list(grid), "encoder_lr_trials": [], "trials_wall_time_s": 0.0}
    if len(grid) == 1:
        return {**choice, "encoder_lr_scale": grid[0], "encoder_lr_chosen_on": None}
    trials = [_run_trial(_trial_config(cfg, v), out_dir / "trials" / f"encoder_lr{v:g}", split,
                         labelled, runtime, world) for v in grid]
    best = evaluate.best_on_validation(trials, "encoder_lr_scale")
    return {**choice, "encoder_lr_scale": best["encoder_lr_scale"], "encoder_lr_trials": trials,
            "encoder_lr_chosen_on": "validation",
            "trials_wall_time_s": sum(t["wall_time_s"] for t in trials)}


def train_supervised(cfg: SupervisedConfig, out_dir: PathLike) -> dict:
    """Supervised training (``cfg.init`` None) or fine-tuning into ``out_dir``; returns the result.

    The labelled images are the probes' ones at the same share and seed (``data.labelled_split``);
    with an ``encoder_lr_grid``, short trials choose the encoder lr scale on validation first.
    """
    return _run_stage(cfg, out_dir, _train_supervised)


def _train_supervised(cfg: SupervisedConfig, run: RunDir, runtime: Runtime,
                      world: distributed.World, out_dir: PathLike) -> dict:
    """:func:`train_supervised`'s work, with the run folder's lock held."""
    done = run.finished(cfg)  # another process may have finished it meanwhile
    if done is not None:
        return done
    split = _load(cfg, cfg.split)
    if not split.labelled:
        raise ConfigError(f"SupervisedConfig.split={cfg.split!r} of {cfg.dataset} has unlabelled "
                          "images: choose a labelled split (e.g. train)")
    labelled = data_mod.labelled_split(split.labels, cfg.subset_fraction, cfg.val_fraction,
                                       cfg.subset_seed)
    _schedule(cfg, len(labelled.fit), world)  # a bad fit fails here, before any trial
    test = _load(cfg, "test")
    if world.is_main:
        record = _data_record(split, labelled.fit, labelled.val)
        record.update(test={**test.provenance, "n": len(test)}, labels=labelled.record())
        run.start(cfg, data=record, device=str(runtime.device))
    choice = _choose_encoder_lr(cfg, Path(out_dir), split, labelled, runtime, world)
    parts, rows, loop = _fit_supervised(cfg, run, split, labelled, runtime, world,
                                        choice["encoder_lr_scale"])
    result = _summary(rows, loop)
    if world.is_main:
        dev = runtime.device
        acc = _classify(parts.model, test.images.to(dev), test.labels, parts.mean, parts.std, runtime)
        meta = {"stem": parts.encoder_meta["stem"], "mean": parts.mean, "std": parts.std,
                "image_size": split.image_size,
                "source": {"run": str(out_dir), "stage": "finetune" if cfg.init else "supervised",
                           "dataset": cfg.dataset, "split": cfg.split, "init": cfg.init,
                           "init_source": parts.encoder_meta.get("source")}}
        state = models.encoder_state(parts.model.encoder, meta)
        state["fc"] = {k: v.detach().cpu() for k, v in parts.model.fc.state_dict().items()}
        state["classes"] = list(split.classes)
        path = run.save_checkpoint(state, "final")
        result.update({"top1": acc["top1"], "top5": acc["top5"],
                       "val_top1": _last_value(rows, "val_top1"),
                       "val_top5": _last_value(rows, "val_top5"), "checkpoint": str(path),
                       "n_train": len(labelled.fit), "n_test": len(test), "lr": parts.lr,
                       "encoder_standin": models.uses_standin(parts.encoder_meta),
                       **labelled.record(), **choice,
                       "wall_time_s": result["wall_time_s"] + choice["trials_wall_time_s"]})
        run.write_result(result)
    distributed.barrier()
    return run.read_result() or result
