"""The training loop the stages share: SimCLR pretraining (:mod:`simpleclr.training.pretrain`) and
supervised training, fine-tuning included (:mod:`simpleclr.training.supervised`), run it.

Both are plain loops over a uint8 image tensor that lives on the training device: each step indexes
a batch, augments it there (per-sample parameters), runs one forward pass in the runtime's
precision and memory format, and steps the optimizer and the per-iteration schedule. No data-loader
workers, no per-step host copies, and no host synchronisation per step on accelerators.

A run writes one folder (:class:`simpleclr.runs.rundir.RunDir`): started again it resumes from
``checkpoints/last.pt`` and ends with the same weights as an uninterrupted run (bit-identical on
CPU); a finished run returns its stored result. Order of the data and of the augmentation is drawn
from generators seeded per (seed, epoch), so an epoch is the same whether or not the run was resumed.

This module holds what does not depend on the stage: the stage preamble (:func:`run_training_stage`:
a finished run's result, the launcher, the run folder's lock), the seeded order, the step's tail
(:func:`finish_step`: backward, NaN/Inf guard, optimizer and schedule), and the epoch loop
(:func:`train_loop`) with its progress, metrics, step trace (:mod:`simpleclr.training.steptrace`),
live curves (:mod:`simpleclr.runs.curves`), checkpoints and resume.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, TypeVar

import numpy as np
import torch
from torch import nn

from ..types import PathLike
from .. import data as data_mod
from . import distributed, launch
from ..config import ConfigError, StageConfig, TrainingConfig
from .device import Runtime, peak_memory, reset_peak_memory, resolve_runtime, rng_state, set_rng_state
from ..errors import SimpleCLRError
from .optim import build_optimizer, scaled_lr, warmup_cosine_scheduler
from ..runs.curves import CurveWriter
from ..runs.rundir import RunDir, RunLocked
from .steptrace import StepTrace

T = TypeVar("T")

__all__ = ["TrainingDiverged", "RehearsalInterrupt", "rehearsal_cut", "step_images", "TrainParts", "Loop",
           "uses_sync_bn", "finish_step", "to_channels_last", "loss_input", "seed_of", "sync_each_step_on",
           "epoch_indices", "fit_schedule", "train_parts", "parallel_model", "run_training_stage",
           "load_data", "data_record", "train_loop", "run_loop", "loop_summary", "last_value",
           "resume_trace", "drop_rows_past"]

# On accelerators the loss is read back (a host sync) only this often: the NaN/Inf guard and the
# progress bar look at sums accumulated on the device in between.
SYNC_EVERY = 25
PROGRESS_EVERY_S = 5.0  # how often rank 0 rewrites progress.json for a watching plan
REHEARSAL_STEPS = 2  # a rehearsal: two epochs of one step, a checkpoint and a resume between them


class RehearsalInterrupt(SimpleCLRError, RuntimeError):
    """A rehearsal's stop after its first epoch's checkpoint: :func:`run_training_stage` catches it
    and runs the stage again, which resumes from that checkpoint as a killed run would. (Should it
    ever escape, it is one line like every library error.)"""


class TrainingDiverged(SimpleCLRError, RuntimeError):
    """The loss or the gradient became NaN/Inf; the last good checkpoint is kept untouched."""


# ---- the steps' shared tail (the stages' steps end here) ------------------------------------
def _grad_norm(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def finish_step(loss: torch.Tensor, parts: TrainParts,
                check_finite: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """backward -> NaN/Inf guard -> optional clipping -> optimizer step -> schedule step; returns
    the detached (loss, grad_norm). ``check_finite`` reads both (a host sync) and raises
    :class:`TrainingDiverged` before the optimizer steps on a NaN/Inf."""
    optimizer, scheduler, scaler, grad_clip = parts.optimizer, parts.scheduler, parts.scaler, parts.grad_clip
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


def to_channels_last(x: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if runtime.channels_last else x


def loss_input(t: torch.Tensor) -> torch.Tensor:
    """The loss's input in float32 at least: bf16/fp16 activations are upcast, float64 (the
    numerical equivalence tests) stays float64."""
    return t if t.dtype == torch.float64 else t.float()


# ---- seeded order (DDP-ready: every rank draws the same permutation and takes its shard) ------
def seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


_DATA_STREAM, _AUG_STREAM = 1, 2


def epoch_indices(n: int, epoch: int, seed: int, batch_size: int, world: distributed.World,
                  device: torch.device) -> torch.Tensor:
    """This rank's sample order for ``epoch``: a seeded permutation, full batches only, on device."""
    gen = torch.Generator().manual_seed(seed_of(seed, _DATA_STREAM, epoch))
    order = torch.randperm(n, generator=gen)
    return distributed.shard(order, world, batch_size).to(device, non_blocking=True)


def _augment_generator(seed: int, epoch: int, rank: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed_of(seed, _AUG_STREAM, epoch, rank))


# ---- shared pieces --------------------------------------------------------------------------
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


def fit_schedule(cfg: TrainingConfig, n_train: int, world: distributed.World) -> tuple[int, int, int, int]:
    """(steps_per_epoch, total_steps, epochs, warmup_steps); fails before compute on a bad fit."""
    name = type(cfg).__name__
    if cfg.batch_size > n_train:
        raise ConfigError(f"{name}.batch_size={cfg.batch_size} is larger than the {n_train} training "
                          "images: lower batch_size (or raise subset_fraction / lower val_fraction)")
    if cfg.batch_size % world.size:
        raise ConfigError(f"{name}.batch_size={cfg.batch_size} is not divisible by the {world.size} "
                          "processes: use a multiple of the world size")
    steps_per_epoch = n_train // cfg.batch_size
    total = cfg.run_steps(steps_per_epoch)
    if cfg.rehearsal:  # checked at the real size above; then two epochs of one (cut) step
        steps_per_epoch, total = 1, min(total, REHEARSAL_STEPS)
    epochs = math.ceil(total / steps_per_epoch)
    # Warm-up is the same fraction of the run as warmup_epochs / epochs, whether or not the run
    # counts steps (the size study fixes steps, so small subsets run many epochs).
    warmup = min(total, round(total * cfg.warmup_epochs / cfg.epochs))
    return steps_per_epoch, total, epochs, warmup


def step_images(cfg: TrainingConfig, world: distributed.World) -> int:
    """Images one process takes per step: its share of ``batch_size``; in a rehearsal at most its
    share of ``rehearsal`` (at least 2: SimCLR needs a negative)."""
    local = cfg.batch_size // world.size
    return min(local, max(2, cfg.rehearsal // world.size)) if cfg.rehearsal else local


def rehearsal_cut(cfg: StageConfig, x: T) -> T:
    """``x`` (images, labels or indices of an evaluation pass) as a rehearsal reads it: the first
    ``cfg.rehearsal`` of them; all of them in a real run."""
    return x[:cfg.rehearsal] if cfg.rehearsal else x  # type: ignore[index,return-value]


def _make_scaler(runtime: Runtime) -> Optional[torch.amp.GradScaler]:
    return torch.amp.GradScaler(runtime.device.type) if runtime.use_grad_scaler else None


@dataclass
class TrainParts:
    """What a stage's step drives: the plain model (state dicts come from it), its compiled or
    wrapped training form, the optimizer at the scaled lr, its schedule, the loss scaler, gradient
    clipping and the runtime (device, precision, memory format). Each stage adds its own."""

    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: Optional[torch.amp.GradScaler]
    lr: float
    grad_clip: Optional[float]
    runtime: Runtime


def train_parts(model: nn.Module, train_model: nn.Module, cfg: TrainingConfig, runtime: Runtime,
                total_steps: int, warmup_steps: int) -> dict:
    """The :class:`TrainParts` fields, built alike for both stages (lr scaled by the batch)."""
    lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling)
    optimizer = build_optimizer(model, cfg, lr)
    return {"model": model, "train_model": train_model, "optimizer": optimizer, "lr": lr,
            "scaler": _make_scaler(runtime), "grad_clip": cfg.grad_clip, "runtime": runtime,
            "scheduler": warmup_cosine_scheduler(optimizer, total_steps, warmup_steps)}


def uses_sync_bn(cfg: TrainingConfig, world: distributed.World) -> bool:
    """Global batch norm: asked for, or by default for SimCLR on several processes (SimCLR's
    "global BN": per-device statistics let the contrastive task cheat on them)."""
    if not world.distributed:
        return False
    return cfg.SYNC_BN_DEFAULT if cfg.sync_bn is None else cfg.sync_bn


def parallel_model(model: nn.Module, cfg: TrainingConfig, runtime: Runtime,
                   world: distributed.World) -> tuple[nn.Module, nn.Module]:
    """(plain model, the form the step runs: DDP-wrapped on several processes, then compiled)."""
    if uses_sync_bn(cfg, world):
        model = distributed.convert_sync_batchnorm(model, runtime.device)
    model = _to_runtime(model, runtime)
    train_model = distributed.data_parallel(model, runtime.device, world)
    return model, (torch.compile(train_model) if cfg.compile else train_model)


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


def run_training_stage(cfg: TrainingConfig, out_dir: PathLike,
                       work: Callable[[Any, RunDir, Runtime, distributed.World, PathLike], dict]) -> dict:
    """The preamble of a training stage: a finished run's result is returned as it is, a config
    with a ``launcher`` runs under it, and otherwise ``work`` runs here with this process's runtime
    and world and the run folder's lock held (by rank 0 for all ranks under torchrun)."""
    run = RunDir(out_dir)
    done = run.finished(cfg)
    if done is not None:
        return done
    if launch.wanted(cfg):
        return launch.run_launched(cfg, out_dir)
    runtime = _runtime(cfg)
    world = _world(runtime)
    reset_peak_memory(runtime.device)
    with _writer_lock(run, world, runtime.device):
        try:
            return work(cfg, run, runtime, world, out_dir)
        except RehearsalInterrupt:
            return work(cfg, run, runtime, world, out_dir)  # built anew: resumes from the checkpoint


def load_data(cfg: StageConfig, split_name: str, *, upsample: bool = False) -> "data_mod.Split":
    """``split_name`` of the stage's dataset at ``cfg.image_size``; with ``upsample`` (a stage that
    resizes batch by batch), above the dataset's own size at that size (:func:`data.read_size`)."""
    size = data_mod.read_size(cfg.dataset, cfg.image_size) if upsample else cfg.image_size
    return data_mod.load_split(cfg.dataset, split_name, root=cfg.data_dir, image_size=size,
                               accept_checksum=cfg.accept_checksum)


def data_record(split: "data_mod.Split", train_idx: torch.Tensor,
                val_idx: Optional[torch.Tensor]) -> dict:
    return {**split.provenance, "name": split.name, "split": split.split,
            "image_size": split.image_size, "n_train": len(train_idx),
            "n_val": 0 if val_idx is None else len(val_idx), "mean": list(split.mean),
            "std": list(split.std)}


# ---- the loop both stages share -------------------------------------------------------------
@dataclass
class Loop:
    """Everything the epoch loop needs, built by :func:`train_loop` from a stage's parts, its step
    (batch indices, augmentation generator, check_finite) -> (loss, grad_norm) and its evaluation."""

    cfg: TrainingConfig
    run: RunDir
    world: distributed.World
    parts: TrainParts
    step: Callable[[torch.Tensor, torch.Generator, bool], tuple[torch.Tensor, torch.Tensor]]
    evaluate: Callable[[int, bool], dict]  # (epoch index, is last) -> extra metrics
    n_train: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    desc: str
    state: dict = field(default_factory=dict)
    trace: Optional[StepTrace] = None  # None: a run folder of format 1, which had no step trace
    session_start: float = 0.0  # perf_counter() at the run's start, as if it had never stopped
    # a rehearsal stops here after its first epoch (as if killed) and the stage resumes it
    interrupt_after_first: bool = False
    shown: float = 0.0  # perf_counter() when progress.json was last written


_CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "rng", "elapsed_s", "train_s",
                    "images")


def _save_last(loop: Loop, epoch: int, step: int, clock: dict) -> None:
    loop.run.save_checkpoint({
        "model": loop.parts.model.state_dict(), "optimizer": loop.parts.optimizer.state_dict(),
        "scheduler": loop.parts.scheduler.state_dict(),
        "scaler": loop.parts.scaler.state_dict() if loop.parts.scaler is not None else None,
        "epoch": epoch, "step": step, "rng": rng_state(loop.state.get("generators", {})),
        "trace": loop.trace.state() if loop.trace is not None else None,
        "fingerprint": loop.cfg.fingerprint(), **clock})


def _resume(loop: Loop) -> tuple[int, int, dict]:
    """(completed epochs, step, clock) from checkpoints/last.pt, or a fresh start.

    Every rank loads the same checkpoint (the run folder must be on storage all nodes see); only
    rank 0 rewrites the metrics and step-trace files.
    """
    clock = {"elapsed_s": 0.0, "train_s": 0.0, "images": 0}
    ckpt = loop.run.load_checkpoint("last", required=_CHECKPOINT_KEYS)
    loop.trace = resume_trace(loop, ckpt)
    if loop.world.is_main:
        drop_rows_past(loop.run, ckpt, keep_trace=loop.trace is not None)
    if ckpt is None:
        return 0, 0, clock
    loop.parts.model.load_state_dict(ckpt["model"])
    loop.parts.optimizer.load_state_dict(ckpt["optimizer"])
    loop.parts.scheduler.load_state_dict(ckpt["scheduler"])
    if loop.parts.scaler is not None and ckpt.get("scaler") is not None:
        loop.parts.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    clock.update({k: ckpt[k] for k in clock})
    return int(ckpt["epoch"]), int(ckpt["step"]), clock


def resume_trace(loop: Loop, ckpt: Optional[dict]) -> Optional[StepTrace]:
    """The step trace with the checkpoint's open window, a new one without a checkpoint, and None
    for a format 1 checkpoint, which has no trace (its rows would begin mid-run)."""
    if ckpt is not None and ckpt.get("trace") is None:
        return None
    return StepTrace.start(loop.total_steps, loop.steps_per_epoch, loop.parts.runtime.device,
                           ckpt["trace"] if ckpt is not None else None)


def drop_rows_past(run: RunDir, ckpt: Optional[dict], keep_trace: bool) -> None:
    """Drop the metrics and step-trace rows a killed run wrote past its checkpoint (all of them
    when it had none; the whole trace when it goes on without one): the resumed run writes them
    again."""
    epoch, step = (ckpt["epoch"], ckpt["step"]) if ckpt is not None else (0, 0)
    if run.metrics_path.exists():
        run.truncate_metrics([r for r in run.read_metrics() if r.get("epoch", 0) <= epoch])
    if run.steps_path.exists():
        run.truncate_steps([r for r in run.read_steps() if keep_trace and r.get("step", 0) <= step])


def _progress(loop: Loop, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=loop.total_steps, initial=initial, desc=loop.desc, unit="step",
                disable=not (loop.cfg.progress and loop.world.is_main), dynamic_ncols=True,
                leave=False)


def train_loop(cfg: TrainingConfig, run: RunDir, world: distributed.World, parts: TrainParts,
               step: Callable[[torch.Tensor, torch.Generator, bool], tuple[torch.Tensor, torch.Tensor]],
               evaluate: Callable[[int, bool], dict], n_train: int, desc: str,
               interrupt_after_first: bool = False) -> tuple[list[dict], Loop]:
    """Train ``parts`` with ``step`` over ``n_train`` images from wherever ``run`` stands to the
    end of :func:`fit_schedule`; returns all metrics rows and the loop (its clock and schedule).
    ``interrupt_after_first``: a rehearsal of the stage's own run (not of a trial inside it) stops
    after its first epoch, for :func:`run_training_stage` to resume it."""
    steps_per_epoch, total_steps, epochs, _ = fit_schedule(cfg, n_train, world)
    loop = Loop(cfg=cfg, run=run, world=world, parts=parts, step=step, evaluate=evaluate,
                n_train=n_train, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                epochs=epochs, desc=desc, interrupt_after_first=interrupt_after_first)
    return run_loop(loop), loop


def run_loop(loop: Loop) -> list[dict]:
    """Train from wherever the run folder stands to the end; returns all metrics rows."""
    cfg = loop.cfg
    start_epoch, step, clock = _resume(loop)
    loop.session_start = time.perf_counter() - clock["elapsed_s"]
    bar = _progress(loop, step)
    curves = CurveWriter(loop.run.path, step) if loop.world.is_main else None
    _show_progress(loop, step)
    try:
        for epoch in range(start_epoch, loop.epochs):
            t0 = time.perf_counter()
            done = _train_epoch(loop, epoch, step, bar, t0)
            step = done.step
            trace_rows = loop.trace.rows() if loop.trace is not None else []
            mean_loss = float(distributed.all_reduce_mean(done.loss_sum)) / max(done.steps, 1)
            mean_norm = float(done.norm_sum) / max(done.steps, 1)
            train_s = time.perf_counter() - t0
            last = epoch == loop.epochs - 1
            extra = loop.evaluate(epoch, last)
            clock["train_s"] += train_s
            clock["images"] += done.steps * step_images(cfg, loop.world) * loop.world.size
            clock["elapsed_s"] = time.perf_counter() - loop.session_start
            row = {"epoch": epoch + 1, "step": step, "loss": mean_loss, "lr": done.lr,
                   "grad_norm": mean_norm,
                   "seconds": time.perf_counter() - t0,
                   "images_per_s": done.steps * cfg.batch_size / max(train_s, 1e-9), **extra}
            if loop.world.is_main:
                loop.run.log_steps(trace_rows)
                loop.run.log_metrics(row)
                curves.log(trace_rows, row)
                if (epoch + 1) % cfg.checkpoint_every == 0 or last or cfg.rehearsal:
                    _save_last(loop, epoch + 1, step, clock)
            distributed.barrier()
            if cfg.rehearsal and loop.interrupt_after_first and epoch == start_epoch == 0 and not last:
                raise RehearsalInterrupt(f"{loop.run.path}: rehearsal stopped after epoch 1 to resume")
    finally:
        bar.close()
        if curves is not None:
            curves.close()
    loop.state["clock"] = clock
    return loop.run.read_metrics()


@dataclass
class _EpochSteps:
    """What one epoch's steps leave for its metrics row."""

    step: int  # the run's step count after them
    loss_sum: torch.Tensor  # on the device: read only where reading is cheap (see SYNC_EVERY)
    norm_sum: torch.Tensor
    lr: float  # the lr the epoch's last step used (so far)
    steps: int = 0  # steps taken in the epoch


def _train_epoch(loop: Loop, epoch: int, step: int, bar: Any, t0: float) -> _EpochSteps:
    """The steps of ``epoch`` from the run's step ``step`` on (the last epoch may stop early),
    guarding against NaN/Inf and updating the progress bar and progress.json on the way."""
    cfg, dev = loop.cfg, loop.parts.runtime.device
    sync_each_step = sync_each_step_on(dev)
    local_batch, taken = cfg.batch_size // loop.world.size, step_images(cfg, loop.world)
    order = epoch_indices(loop.n_train, epoch, cfg.seed, cfg.batch_size, loop.world, dev)
    gen = _augment_generator(cfg.seed, epoch, loop.world.rank, dev)
    loop.state["generators"] = {"augment": gen}
    n_steps = min(loop.steps_per_epoch, loop.total_steps - step)
    done = _EpochSteps(step, torch.zeros((), device=dev), torch.zeros((), device=dev),
                       lr=_main_lr(loop.parts.optimizer))
    for i in range(n_steps):
        idx = order[i * local_batch:i * local_batch + taken]
        lr = _main_lr(loop.parts.optimizer)  # the lr this step uses
        try:
            loss, gnorm = loop.step(idx, gen, sync_each_step)
        except TrainingDiverged as e:
            raise _diverged(loop, done.step, epoch, str(e)) from None
        done.loss_sum += loss
        done.norm_sum += gnorm
        done.step += 1
        done.steps += 1
        done.lr = lr
        if loop.trace is not None:
            loop.trace.add(loss, done.step, lr)
        # reading the sums syncs: every step on CPU (free), every SYNC_EVERY elsewhere
        at_sync = sync_each_step or done.steps % SYNC_EVERY == 0 or i == n_steps - 1
        if at_sync and not sync_each_step:
            _check_sums(loop, done.step, epoch, done.loss_sum, done.norm_sum)
        bar.update(1)
        _show_progress(loop, done.step)
        if at_sync and cfg.progress:
            rate = done.steps * cfg.batch_size / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{float(done.loss_sum) / done.steps:.4f}",
                            lr=f"{_main_lr(loop.parts.optimizer):.3g}",
                            img_s=f"{rate:.0f}", refresh=False)
    return done


def _show_progress(loop: Loop, step: int) -> None:
    """Rank 0 rewrites the run folder's progress.json at most every PROGRESS_EVERY_S seconds (and
    at the last step), so a plan running this notebook can show where it stands."""
    now = time.perf_counter()
    if loop.world.is_main and (now - loop.shown >= PROGRESS_EVERY_S or step == loop.total_steps):
        loop.run.write_progress(step, loop.total_steps, now - loop.session_start)
        loop.shown = now


def sync_each_step_on(device: torch.device) -> bool:
    """Check the loss every step where reading it is free (CPU); elsewhere every SYNC_EVERY steps."""
    return device.type == "cpu"


def _main_lr(optimizer: torch.optim.Optimizer) -> float:
    """The lr of the groups outside a fine-tuned encoder (the configured, scaled lr)."""
    groups = [g for g in optimizer.param_groups if not str(g.get("name", "")).startswith("encoder/")]
    return float((groups or optimizer.param_groups)[0]["lr"])


def _check_sums(loop: Loop, step: int, epoch: int, loss_sum: torch.Tensor,
                norm_sum: torch.Tensor) -> None:
    """The lazy guard: a NaN/Inf anywhere since the epoch began poisons the running sums."""
    ok = bool(torch.isfinite(loss_sum)) and (loop.parts.scaler is not None or bool(torch.isfinite(norm_sum)))
    if not ok:
        raise _diverged(loop, step, epoch, f"loss sum={float(loss_sum):.4g}, grad-norm sum="
                                           f"{float(norm_sum):.4g} since the epoch began")


def _diverged(loop: Loop, step: int, epoch: int, what: str) -> TrainingDiverged:
    last = loop.run.checkpoint_path("last")
    kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was written yet"
    return TrainingDiverged(f"training diverged at step {step + 1} (epoch {epoch + 1}): {what} is not "
                            f"finite; {kept}: lower lr or enable grad_clip, then run again")


def loop_summary(rows: list[dict], loop: Loop) -> dict:
    clock = loop.state["clock"]
    return {"final_loss": rows[-1]["loss"] if rows else None, "epochs": loop.epochs,
            "steps": loop.total_steps, "images_seen": int(clock["images"]),  # each SimCLR image: 2 views
            "images_per_s": clock["images"] / max(clock["train_s"], 1e-9),
            "wall_time_s": clock["elapsed_s"], **peak_memory(loop.parts.runtime.device),
            "runtime": {**loop.parts.runtime.describe(), "world_size": loop.world.size,
                        "sync_bn": uses_sync_bn(loop.cfg, loop.world)}}


def last_value(rows: list[dict], key: str) -> Optional[float]:
    values = [r[key] for r in rows if r.get(key) is not None]
    return values[-1] if values else None
