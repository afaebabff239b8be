"""The one training loop: pretraining by any method (:mod:`simpleclr.training.methods`) and
supervised training, fine-tuning included (:mod:`simpleclr.training.stages`), run it.

Both are plain loops over a uint8 image tensor that lives on the training device: each step indexes
a batch, augments it there (per-sample parameters), runs one forward pass in the runtime's
precision and memory format, and steps the optimizer and the per-iteration schedule. No data-loader
workers, no per-step host copies, and no host synchronisation per step on accelerators.

A run writes one folder (:class:`simpleclr.runs.rundir.RunDir`): started again it resumes from
``checkpoints/last.pt`` and ends with the same weights as an uninterrupted run (bit-identical on
CPU); a finished run returns its stored result. Order of the data and of the augmentation is drawn
from generators seeded per (seed, epoch), so an epoch is the same whether or not the run was resumed.

A stage hands the loop its parts (:class:`TrainParts`: the model, its training form, the optimizer
and schedule, and the *objective*: a method from :mod:`simpleclr.training.methods`, or the
supervised stage's cross-entropy) and its images; :func:`train_step` is the step, augment ->
forward -> loss -> backward -> step, and :func:`fit` the epochs around it, with progress, metrics,
step trace (:mod:`simpleclr.training.parts.steptrace`), live curves (:mod:`simpleclr.runs.curves`),
checkpoints and resume. An objective is a part: the loop never calls back into a stage. The stage's
start (:func:`open_run`, :func:`writer_lock`) returns a finished run's result, runs a launcher, or
holds the run folder's lock. A rehearsal (``cfg.rehearsal``) is honoured here: batches of at most
``rehearsal`` images, two epochs of one step, and after the first epoch's checkpoint the loop reloads
itself from it exactly as a resumed run does.
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
from . import launch
from .parts import distributed
from ..config import ConfigError, StageConfig, TrainingConfig
from .parts.device import Runtime, peak_memory, reset_peak_memory, resolve_runtime, rng_state, set_rng_state
from ..errors import SimpleCLRError
from .parts.optim import build_optimizer, scaled_lr, warmup_cosine_scheduler
from ..runs.curves import CurveWriter
from ..runs.rundir import RunDir, RunLocked
from .parts import steptrace
from .parts.steptrace import StepTrace

T = TypeVar("T")

__all__ = ["TrainingDiverged", "Objective", "TrainParts", "build_parts", "train_step", "fit", "Fitted",
           "fit_schedule", "open_run", "writer_lock", "load_data", "data_record", "rehearsal_cut",
           "epoch_indices", "seed_of", "uses_sync_bn", "loss_input", "last_value"]

# On accelerators the loss is read back (a host sync) only this often: the NaN/Inf guard and the
# progress bar look at sums accumulated on the device in between.
SYNC_EVERY = 25
PROGRESS_EVERY_S = 5.0  # how often rank 0 rewrites progress.json for a watching plan
REHEARSAL_STEPS = 2  # a rehearsal: two epochs of one step, a checkpoint and a resume between them


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


class Objective:
    """What a stage trains for, as the loop calls it: ``views`` (the augmentation: uint8 batch ->
    the network's input), ``loss`` (the network's output and the batch's labels -> a scalar) and
    ``after_step`` (per-step extras after the optimizer's step: an EMA target, a queue). Every
    method in :mod:`simpleclr.training.methods` is one; the supervised stage has its own."""

    def views(self, images: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, out: Any, labels: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, step: int, total_steps: int) -> None:
        """After the optimizer's step ``step`` (0-based) of ``total_steps``; nothing by default."""


@dataclass
class TrainParts:
    """What the loop drives: the plain model (state dicts come from it; a method's target network
    and queue are in it, so checkpoints hold them), its compiled or DDP-wrapped training form, the
    objective, the optimizer at the scaled lr, its schedule, the loss scaler, gradient clipping and
    the runtime (device, precision, memory format)."""

    model: nn.Module
    train_model: nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: Optional[torch.amp.GradScaler]
    lr: float
    grad_clip: Optional[float]
    runtime: Runtime


def build_parts(model: nn.Module, objective: Objective, cfg: TrainingConfig, runtime: Runtime,
                world: distributed.World, total_steps: int, warmup_steps: int) -> TrainParts:
    """:class:`TrainParts` for ``model`` (global BN under several processes where asked, moved to the
    runtime, DDP-wrapped, compiled), the optimizer at the lr scaled by the batch, and its schedule.
    ``objective`` is ``model`` itself for a method, so it is built before the conversion and keeps
    pointing at the converted modules (conversion happens in place below the top module)."""
    if uses_sync_bn(cfg, world):
        model = distributed.convert_sync_batchnorm(model, runtime.device)
    model = _to_runtime(model, runtime)
    train_model = distributed.data_parallel(model, runtime.device, world)
    train_model = torch.compile(train_model) if cfg.compile else train_model
    lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling)
    optimizer = build_optimizer(model, cfg, lr)
    return TrainParts(model=model, train_model=train_model, objective=objective, optimizer=optimizer,
                      scheduler=warmup_cosine_scheduler(optimizer, total_steps, warmup_steps),
                      scaler=_make_scaler(runtime), lr=lr, grad_clip=cfg.grad_clip, runtime=runtime)


def uses_sync_bn(cfg: TrainingConfig, world: distributed.World) -> bool:
    """Global batch norm: asked for, or by default for pretraining on several processes (SimCLR's
    "global BN": per-device statistics let the contrastive task cheat on them)."""
    if not world.distributed:
        return False
    return cfg.SYNC_BN_DEFAULT if cfg.sync_bn is None else cfg.sync_bn


# ---- a stage's start -----------------------------------------------------------------------
@dataclass
class RunStart:
    """Where a training stage stands when it starts: ``result`` is set when there is nothing to do
    (a finished run, or one a launcher ran); otherwise this process's runtime and world."""

    run: RunDir
    result: Optional[dict] = None
    runtime: Optional[Runtime] = None
    world: distributed.World = field(default_factory=distributed.World)


def open_run(cfg: TrainingConfig, out_dir: PathLike) -> RunStart:
    """A finished run's result as it is, a config with a ``launcher`` run under it, or else this
    process's runtime and world (joined to torchrun's process group under a launcher)."""
    run = RunDir(out_dir)
    done = run.finished(cfg)
    if done is not None:
        return RunStart(run, result=done)
    if launch.wanted(cfg):
        return RunStart(run, result=launch.run_launched(cfg, out_dir))
    runtime = _runtime(cfg)
    world = _world(runtime)
    reset_peak_memory(runtime.device)
    return RunStart(run, runtime=runtime, world=world)


@contextlib.contextmanager
def writer_lock(start: RunStart) -> Iterator[None]:
    """Rank 0 holds the run folder's lock for the block. When another process has it, every rank
    raises :class:`RunLocked` together, so none waits in a collective for a rank 0 that left."""
    run, world, device = start.run, start.world, start.runtime.device
    with contextlib.ExitStack() as stack:
        refused: Optional[RunLocked] = None
        if world.is_main:
            try:
                stack.enter_context(run.lock())
            except RunLocked as e:
                refused = e
        holder = distributed.from_main(0 if refused is None else (refused.pid or -1), device)
        if holder:
            if refused is None:  # the holder's host from the lock file rank 0 found taken (shared storage)
                words = run.lock_path.read_text().split() if run.lock_path.exists() else []
                host = words[1] if len(words) > 1 and words[0] == str(holder) else None
                refused = RunLocked(run.path, holder if holder > 0 else None, host)
            raise refused
        yield


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



# ---- the loop -------------------------------------------------------------------------------
def train_step(parts: TrainParts, images: torch.Tensor, labels: Optional[torch.Tensor],
               generator: Optional[torch.Generator], step: int = 0, total_steps: int = 1,
               check_finite: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One iteration on a uint8 batch already on the device: augment -> forward -> loss ->
    backward -> step, then the objective's per-step extras. Returns the detached device tensors
    (loss, grad_norm), read when the caller chooses; ``check_finite``: see :func:`finish_step`."""
    parts.optimizer.zero_grad(set_to_none=True)
    x = to_channels_last(parts.objective.views(images, generator), parts.runtime)  # augment
    with parts.runtime.autocast():
        out = parts.train_model(x)  # forward over both views (the method says whether BN sees them apart)
    loss = parts.objective.loss(out, labels)  # loss (gathered over the processes where it needs)
    done = finish_step(loss, parts, check_finite)  # backward, guard, optimizer and schedule steps
    parts.objective.after_step(step, total_steps)  # EMA target, queue
    return done


@dataclass
class Fitted:
    """What :func:`fit` leaves: every metrics row and the figures result.json records."""

    rows: list[dict]
    summary: dict


@dataclass
class _Loop:
    """The loop's state between its pieces (schedule, clock, step trace, progress)."""

    cfg: TrainingConfig
    run: RunDir
    world: distributed.World
    parts: TrainParts
    steps_per_epoch: int
    total_steps: int
    epochs: int
    desc: str
    trace: Optional[StepTrace] = None  # None: a run folder of format 1, which had no step trace
    session_start: float = 0.0  # perf_counter() at the run's start, as if it had never stopped
    shown: float = 0.0  # perf_counter() when progress.json was last written
    generators: dict = field(default_factory=dict)


def fit(cfg: TrainingConfig, run: RunDir, world: distributed.World, parts: TrainParts,
        images: torch.Tensor, labels: Optional[torch.Tensor] = None,
        monitor: Optional[Callable[[int, bool], dict]] = None, *, desc: str = "train",
        rehearse_resume: bool = True) -> Fitted:
    """Train ``parts`` on ``images`` (uint8, on the device; ``labels`` beside them for a supervised
    objective) from wherever ``run`` stands to the end of :func:`fit_schedule`. After each epoch
    ``monitor(epoch, last)`` (a :mod:`simpleclr.training.probe` monitor) adds its figures to the
    metrics row. ``rehearse_resume``: in a rehearsal, reload from the first epoch's checkpoint (a
    trial inside a stage's run does not)."""
    steps_per_epoch, total, epochs, _ = fit_schedule(cfg, len(images), world)
    loop = _Loop(cfg, run, world, parts, steps_per_epoch, total, epochs, desc)
    dev, sync_each_step = parts.runtime.device, sync_each_step_on(parts.runtime.device)
    local_batch, taken = cfg.batch_size // world.size, step_images(cfg, world)
    epoch, step, clock = _resume(loop)
    loop.session_start = time.perf_counter() - clock["elapsed_s"]
    bar, curves = _progress(loop, step), CurveWriter(run.path, step) if world.is_main else None
    _show_progress(loop, step)
    try:
        while epoch < epochs:
            t0 = time.perf_counter()
            order = epoch_indices(len(images), epoch, cfg.seed, cfg.batch_size, world, dev)
            gen = loop.generators["augment"] = _augment_generator(cfg.seed, epoch, world.rank, dev)
            sums = torch.zeros(2, device=dev)  # loss, grad norm: read only where reading is cheap
            n_steps, lr = min(steps_per_epoch, total - step), _main_lr(parts.optimizer)
            for i in range(n_steps):
                idx = order[i * local_batch:i * local_batch + taken]
                lr = _main_lr(parts.optimizer)  # the lr this step uses
                try:
                    loss, gnorm = train_step(parts, images[idx], None if labels is None else labels[idx],
                                             gen, step, total, check_finite=sync_each_step)
                except TrainingDiverged as e:
                    raise _diverged(loop, step, epoch, str(e)) from None
                sums += torch.stack([loss, gnorm])
                step += 1
                if loop.trace is not None:
                    loop.trace.add(loss, step, lr)
                _after_step(loop, i, n_steps, step, epoch, sums, bar, t0)
            train_s = time.perf_counter() - t0
            last = epoch == epochs - 1
            extra = monitor(epoch, last) if monitor is not None else {}
            clock["train_s"] += train_s
            clock["images"] += n_steps * taken * world.size
            clock["elapsed_s"] = time.perf_counter() - loop.session_start
            row = {"epoch": epoch + 1, "step": step,
                   "loss": float(distributed.all_reduce_mean(sums[0])) / max(n_steps, 1), "lr": lr,
                   "grad_norm": float(sums[1]) / max(n_steps, 1), "seconds": time.perf_counter() - t0,
                   "images_per_s": n_steps * cfg.batch_size / max(train_s, 1e-9), **extra}
            _log_epoch(loop, row, epoch + 1, step, clock, curves)
            epoch += 1
            if cfg.rehearsal and rehearse_resume and epoch == 1 and not last:
                epoch, step, clock = _resume(loop)  # as a run killed here and started again would
    finally:
        bar.close()
        if curves is not None:
            curves.close()
    rows = run.read_metrics()
    return Fitted(rows, _summary(rows, loop, clock))


def _after_step(loop: _Loop, i: int, n_steps: int, step: int, epoch: int, sums: torch.Tensor,
                bar: Any, t0: float) -> None:
    """The lazy NaN/Inf guard (every SYNC_EVERY steps off the CPU), the progress bar and
    progress.json."""
    sync_each_step = sync_each_step_on(loop.parts.runtime.device)
    at_sync = sync_each_step or (i + 1) % SYNC_EVERY == 0 or i == n_steps - 1
    if at_sync and not sync_each_step:
        _check_sums(loop, step, epoch, sums[0], sums[1])
    bar.update(1)
    _show_progress(loop, step)
    if at_sync and loop.cfg.progress:
        rate = (i + 1) * loop.cfg.batch_size / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(loss=f"{float(sums[0]) / (i + 1):.4f}", lr=f"{_main_lr(loop.parts.optimizer):.3g}",
                        img_s=f"{rate:.0f}", refresh=False)


def _log_epoch(loop: _Loop, row: dict, epoch: int, step: int, clock: dict, curves: Any) -> None:
    """Rank 0 writes the epoch's step-trace rows, its metrics row and (when due) the checkpoint."""
    trace_rows = loop.trace.rows() if loop.trace is not None else []
    if loop.world.is_main:
        loop.run.log_steps(trace_rows)
        loop.run.log_metrics(row)
        curves.log(trace_rows, row)
        if epoch % loop.cfg.checkpoint_every == 0 or epoch == loop.epochs or loop.cfg.rehearsal:
            _save_last(loop, epoch, step, clock)
    distributed.barrier()


_CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "rng", "elapsed_s", "train_s",
                    "images")


def _save_last(loop: _Loop, epoch: int, step: int, clock: dict) -> None:
    loop.run.save_checkpoint({
        "model": loop.parts.model.state_dict(), "optimizer": loop.parts.optimizer.state_dict(),
        "scheduler": loop.parts.scheduler.state_dict(),
        "scaler": loop.parts.scaler.state_dict() if loop.parts.scaler is not None else None,
        "epoch": epoch, "step": step, "rng": rng_state(loop.generators),
        "trace": loop.trace.state() if loop.trace is not None else None,
        "fingerprint": loop.cfg.fingerprint(), **clock})


def _resume(loop: _Loop) -> tuple[int, int, dict]:
    """(completed epochs, step, clock) from checkpoints/last.pt, or a fresh start.

    Every rank loads the same checkpoint (the run folder must be on storage all nodes see); only
    rank 0 rewrites the metrics and step-trace files.
    """
    clock = {"elapsed_s": 0.0, "train_s": 0.0, "images": 0}
    ckpt = loop.run.load_checkpoint("last", required=_CHECKPOINT_KEYS)
    loop.trace = steptrace.resume(ckpt, loop.total_steps, loop.steps_per_epoch, loop.parts.runtime.device)
    if loop.world.is_main:
        steptrace.drop_rows_past(loop.run, ckpt, keep_trace=loop.trace is not None)
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


def _progress(loop: _Loop, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=loop.total_steps, initial=initial, desc=loop.desc, unit="step",
                disable=not (loop.cfg.progress and loop.world.is_main), dynamic_ncols=True,
                leave=False)

def _show_progress(loop: _Loop, step: int) -> None:
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

def _check_sums(loop: _Loop, step: int, epoch: int, loss_sum: torch.Tensor,
                norm_sum: torch.Tensor) -> None:
    """The lazy guard: a NaN/Inf anywhere since the epoch began poisons the running sums."""
    ok = bool(torch.isfinite(loss_sum)) and (loop.parts.scaler is not None or bool(torch.isfinite(norm_sum)))
    if not ok:
        raise _diverged(loop, step, epoch, f"loss sum={float(loss_sum):.4g}, grad-norm sum="
                                           f"{float(norm_sum):.4g} since the epoch began")

def _diverged(loop: _Loop, step: int, epoch: int, what: str) -> TrainingDiverged:
    last = loop.run.checkpoint_path("last")
    kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was written yet"
    return TrainingDiverged(f"training diverged at step {step + 1} (epoch {epoch + 1}): {what} is not "
                            f"finite; {kept}: lower lr or enable grad_clip, then run again")

def _summary(rows: list[dict], loop: _Loop, clock: dict) -> dict:
    return {"final_loss": rows[-1]["loss"] if rows else None, "epochs": loop.epochs,
            "steps": loop.total_steps, "images_seen": int(clock["images"]),  # each SimCLR image: 2 views
            "images_per_s": clock["images"] / max(clock["train_s"], 1e-9),
            "wall_time_s": clock["elapsed_s"], **peak_memory(loop.parts.runtime.device),
            "runtime": {**loop.parts.runtime.describe(), "world_size": loop.world.size,
                        "sync_bn": uses_sync_bn(loop.cfg, loop.world)}}


def last_value(rows: list[dict], key: str) -> Optional[float]:
    values = [r[key] for r in rows if r.get(key) is not None]
    return values[-1] if values else None
