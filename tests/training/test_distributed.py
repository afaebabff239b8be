"""Data parallelism: 2 gloo processes on loopback must compute exactly what one process computes
on the same global batch (loss and every parameter's gradient), the guard against the 1/world_size
gradient bug of several public SimCLR implementations; a 2-process pretraining run resumes
bit-identically, only rank 0 writes its folder, and torchrun starts the stages from the CLI and
from a config's ``launcher``."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from helpers.datasets import TINY_4
from helpers.gloo import GlooPool, free_port
from helpers.interrupt import Interrupt
from simpleclr.training import trainer, trainer as train
from simpleclr.training.stages import linear_eval as linear_eval_stage, pretrain, supervised
from simpleclr.config import METHOD_NAMES, LinearEvalConfig, PretrainConfig, SupervisedConfig
from simpleclr.data import prepare
from simpleclr.training.parts.device import resolve_runtime
from simpleclr.training.parts.distributed import (MainRankFailed, World, convert_sync_batchnorm, gather_with_grad,
                                            init_from_env, shard)
from simpleclr.training.stages.linear_eval import linear_eval
from simpleclr.training.launch import LaunchError
from simpleclr.training.methods.simclr import nt_xent
from simpleclr.runs.rundir import RunDir, RunLocked

GLOBAL_BATCH = 8
WORLD = 2
# The encoder's width in these runs: they check how processes share work, not what a network
# learns, and a width-16 step costs about a tenth of ResNet-18's
WIDTH = 16
# Equivalence checks run in float64, whose summation-order error (~1e-13 here) is the same on
# every CPU; a 1/world-size gradient or per-process BN statistics are off by > 1e-3.
TOL = 1e-9


def _net(batch_norm: bool) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16)]
    return nn.Sequential(*layers).double()


def _views() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(GLOBAL_BATCH, 3, 6, 6, generator=g, dtype=torch.float64),
            torch.randn(GLOBAL_BATCH, 3, 6, 6, generator=g, dtype=torch.float64))


def _loss(model: nn.Module, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    z = model(torch.cat([v1, v2]))  # one forward over both views, as the trainer does
    z1, z2 = z.chunk(2)
    return nt_xent(gather_with_grad(z1), gather_with_grad(z2), temperature=0.5)


def _ddp_step(world: World, batch_norm: bool, sync_bn: bool) -> dict:
    model = _net(batch_norm)
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = nn.parallel.DistributedDataParallel(model)
    v1, v2 = _views()
    mine = shard(torch.arange(GLOBAL_BATCH), world, GLOBAL_BATCH)
    loss = _loss(ddp, v1[mine], v2[mine])
    loss.backward()
    return {"loss": loss.detach(), "grads": {n: p.grad for n, p in model.named_parameters()}}


@pytest.fixture(scope="module")
def pool():
    """Two ranks in one gloo group for the module's two-process tests (helpers.gloo)."""
    ranks = GlooPool(WORLD)
    yield ranks
    ranks.close()


# The bare mechanism on a BN-free network (the trainer-level checks below add batch norm).
@pytest.mark.slow
@pytest.mark.parametrize("batch_norm,sync_bn", [(False, False)])
def test_two_processes_match_one_process_on_the_global_batch(pool, batch_norm, sync_bn):
    got = pool.run(_ddp_step, batch_norm, sync_bn)[0]

    model = _net(batch_norm)
    v1, v2 = _views()
    loss = _loss(model, v1, v2)
    loss.backward()
    torch.testing.assert_close(got["loss"], loss.detach(), atol=TOL, rtol=TOL)
    names = [n for n, _ in model.named_parameters()]
    assert sorted(got["grads"]) == sorted(names)
    for name, p in model.named_parameters():
        torch.testing.assert_close(got["grads"][name], p.grad, atol=TOL, rtol=TOL, msg=name)


def test_shard_gives_each_rank_its_slice_of_every_global_batch():
    order = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    parts = [shard(order, World(rank=r, size=2), batch_size=8) for r in range(2)]
    # 20 images, global batch 8: two full global batches, the last 4 images dropped
    assert [len(p) for p in parts] == [8, 8]
    rebuilt = torch.stack([p.view(2, 4) for p in parts], dim=1).reshape(-1)
    assert torch.equal(rebuilt, order[:16])
    assert set(parts[0].tolist()).isdisjoint(parts[1].tolist())


def test_shard_rejects_a_batch_that_does_not_divide():
    with pytest.raises(ValueError, match="not divisible by world size 3"):
        shard(torch.arange(30), World(rank=0, size=3), batch_size=8)


# ---- the trainer's own pieces: build_pretrain / build_supervised and one step ----------------
IMG = 8


class _FixedViews:
    """Stands in for the augmentation so that every process sees exactly the views one process
    would: view 1 is the image, view 2 its mirror image, scaled."""

    def two_views(self, x: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        return x, 0.5 * x.flip(3)

    def __call__(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        return x


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(GLOBAL_BATCH, 3, IMG, IMG, generator=g), torch.arange(GLOBAL_BATCH) % 4


def _one_step(world: World, stage: str, sync_bn: bool) -> dict:
    """One optimizer step of the real trainer pieces (LARS / SGD) on this rank's shard, in float64.

    Two processes sum each batch in another order than one. In float32 that error depends on the
    convolution kernel the CPU picks (2.8e-5 on gradients of size 3 on an AVX2-only machine, 1.25e-5
    on an AVX512 one), so no float32 tolerance is both strict and portable. In float64 it is about
    1e-13, far below TOL, while a 1/world-size gradient or per-process statistics are off by > 1e-3.
    """
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # parameters, buffers, images: all float64
    try:
        return _one_step_in_default_dtype(world, stage, sync_bn)
    finally:
        torch.set_default_dtype(default)


def _one_step_in_default_dtype(world: World, stage: str, sync_bn: bool) -> dict:
    runtime = resolve_runtime("cpu", "fp32", channels_last=False, num_threads=1)
    torch.manual_seed(0)
    images, labels = _batch()
    mine = shard(torch.arange(GLOBAL_BATCH), world, GLOBAL_BATCH)
    if stage in METHOD_NAMES:
        extra = {"mocov2": {"queue_size": 12}, "byol": {"pred_hidden": 16}, "simsiam": {"pred_hidden": 16}}
        cfg = PretrainConfig(method=stage, batch_size=GLOBAL_BATCH, proj_hidden=32, proj_out=16, sync_bn=sync_bn,
                             precision="fp32", channels_last=False, width=WIDTH, **extra.get(stage, {}))
        parts = pretrain.build_pretrain(cfg, runtime, image_size=IMG, mean=(0.5,) * 3, std=(0.25,) * 3,
                                        total_steps=10, warmup_steps=0, world=world)
        parts.objective.augment = _FixedViews()
        loss, _ = trainer.train_step(parts, images[mine], None, None, step=2, total_steps=10)
    else:
        cfg = SupervisedConfig(batch_size=GLOBAL_BATCH, sync_bn=sync_bn, precision="fp32",
                               channels_last=False, width=WIDTH)
        parts = supervised.build_supervised(cfg, runtime, image_size=IMG, mean=(0.5,) * 3,
                                            std=(0.25,) * 3, num_classes=4, total_steps=10,
                                            warmup_steps=0, world=world).train
        parts.objective.augment = _FixedViews()
        loss, _ = trainer.train_step(parts, images[mine], labels[mine], None)
    model = parts.model
    # a method's target network has no gradient; its EMA step shows in params, MoCo's queue in buffers
    return {"loss": loss, "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
            "params": {n: p.detach().clone() for n, p in model.named_parameters()},
            "buffers": {n: b.clone() for n, b in model.named_buffers() if "running" in n or n == "queue"}}


def _env_worker(rank: int, port: int, out: str, fn, *args) -> None:
    """A rank started as torchrun would start it (RANK, WORLD_SIZE, MASTER_* in the environment),
    so :func:`init_from_env` joins the group; ``fn(world, *args)`` is saved to ``out``.rank."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world = init_from_env(torch.device("cpu"))
    try:
        torch.save(fn(world, *args), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path: Path, fn, *args) -> list:
    out = str(tmp_path / "out")
    mp.spawn(_env_worker, args=(free_port(), out, fn, *args), nprocs=WORLD, join=True)
    return [torch.load(f"{out}.{r}", weights_only=True) for r in range(WORLD)]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _assert_close(a: dict, b: dict) -> None:
    """Equal up to float64 summation order, per element, for every tensor of both dicts."""
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == torch.float64, k  # the comparison means nothing in float32
        torch.testing.assert_close(a[k], b[k], atol=TOL, rtol=TOL, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["simclr", "supervised", "mocov2", "byol", "simsiam", "barlow", "vicreg"])
def test_global_batch_norm_makes_two_processes_equal_one_on_the_global_batch(pool, stage):
    """ResNet-18 with batch norm: with sync_bn the loss, every gradient, the LARS/SGD update, the
    BN running statistics, a method's EMA target and MoCo's queue (filled with both ranks'
    keys) of 2 processes equal those of 1 process on the whole batch. Barlow Twins' cross-
    correlation and VICReg's variance and covariance are over the global batch, their gradient
    through the gathered projections."""
    got = pool.run(_one_step, stage, True)
    ref = _one_step(World(), stage, False)
    # SimCLR, Barlow, VICReg: every rank computes the global loss; the others each their shard's mean
    losses = torch.stack([g["loss"] for g in got])
    torch.testing.assert_close(losses.mean(), ref["loss"], atol=TOL, rtol=TOL)
    if stage in ("simclr", "barlow", "vicreg"):
        torch.testing.assert_close(losses, ref["loss"].expand(WORLD), atol=TOL, rtol=TOL)
    if stage == "mocov2":
        assert "queue" in ref["buffers"] and any(k.startswith("target_encoder.") for k in ref["params"])
    for g in got:
        _assert_close(g["grads"], ref["grads"])
        _assert_close(g["params"], ref["params"])
        _assert_close(g["buffers"], ref["buffers"])
        assert len(g["buffers"]) >= 2 * 20  # ResNet-18's 20 batch norms, mean and var each


@pytest.mark.slow
def test_without_global_batch_norm_two_processes_differ(pool):
    """The control: per-process BN statistics change the computation (so the test above is not
    vacuous), which is why SimCLR turns sync_bn on by default on several processes."""
    got = pool.run(_one_step, "simclr", False)
    ref = _one_step(World(), "simclr", False)
    assert _max_diff(got[0]["grads"], ref["grads"]) > 1e-3


def _bn_layer(world: World, dtype: torch.dtype, dims: int) -> dict:
    """One batch-norm layer (2-D or channels_last 4-D input; float64, or bf16 input with float32
    parameters as under autocast) on this rank's shard, converted to GlobalBatchNorm when the world
    has several processes. Results are float64 for float64 input, float32 otherwise."""
    torch.manual_seed(3)
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    shape = (GLOBAL_BATCH, 6, 5, 5) if dims == 4 else (GLOBAL_BATCH, 6)
    x = (torch.randn(shape, dtype=wide) * 3 + 1.5).to(dtype)
    if dims == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    bn = (nn.BatchNorm2d if dims == 4 else nn.BatchNorm1d)(6).to(wide)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    if world.distributed:
        bn = convert_sync_batchnorm(bn, torch.device("cpu"))
    mine = shard(torch.arange(GLOBAL_BATCH), world, GLOBAL_BATCH)
    xs = x[mine].detach().requires_grad_()
    y = bn(xs)
    upstream = torch.linspace(-1, 1, x.numel(), dtype=wide).view(x.shape)[mine]  # not a mean
    (y.to(wide) * upstream).sum().backward()  # summed over ranks: the one-process loss
    return {"y": y.detach().to(wide), "dx": xs.grad.to(wide), "dw": bn.weight.grad, "db": bn.bias.grad,
            "running": torch.cat([bn.running_mean, bn.running_var]), "mine": mine,
            "channels_last": dims == 2 or xs.grad.is_contiguous(memory_format=torch.channels_last)}


# bf16: the output is rounded to 8 bits of mantissa (one ulp is 2**-8 relative) after float32
# statistics, so two summation orders may differ by a few bf16 ulps whatever the CPU; 3e-2 is
# about 8 ulps, and the running statistics (float32) get float32's margin. float64: TOL.
@pytest.mark.parametrize("dtype,dims,tol,running_tol", [(torch.float64, 4, TOL, TOL),
                                                        (torch.bfloat16, 4, 3e-2, 1e-5),
                                                        (torch.float64, 2, TOL, TOL)])
@pytest.mark.slow
def test_global_batch_norm_layer_matches_batch_norm_on_the_whole_batch(pool, dtype, dims, tol,
                                                                       running_tol):
    """Output, input gradient (kept channels_last), summed weight/bias gradients and running
    statistics of GlobalBatchNorm over 2 processes against nn.BatchNorm on the global batch; the
    input has a mean far from 0, where a sum-of-squares variance would lose digits."""
    got = pool.run(_bn_layer, dtype, dims)
    ref = _bn_layer(World(), dtype, dims)
    for g in got:
        torch.testing.assert_close(g["y"], ref["y"][g["mine"]], atol=tol, rtol=tol)
        torch.testing.assert_close(g["dx"], ref["dx"][g["mine"]], atol=tol, rtol=tol)
        torch.testing.assert_close(g["running"], ref["running"], atol=running_tol, rtol=running_tol)
        assert g["channels_last"]
    for key in ("dw", "db"):
        torch.testing.assert_close(got[0][key] + got[1][key], ref[key], atol=tol, rtol=tol)


def test_sync_bn_defaults_on_for_simclr_only_and_only_on_several_processes():
    two = World(rank=0, size=2)
    assert train.uses_sync_bn(PretrainConfig(), two)
    assert not train.uses_sync_bn(PretrainConfig(), World())
    assert not train.uses_sync_bn(PretrainConfig(sync_bn=False), two)
    assert not train.uses_sync_bn(SupervisedConfig(), two)
    assert train.uses_sync_bn(SupervisedConfig(sync_bn=True), two)


# ---- a real 2-process pretraining run: resume, one writer ------------------------------------
WRITES = ("start", "log_metrics", "truncate_metrics", "log_steps", "truncate_steps", "save_checkpoint",
          "write_result")


def _pretrain_cfg(data_dir: str) -> PretrainConfig:
    # 80 images, 8 held out for the kNN monitor: 72 // 16 = 4 steps per epoch, 3 epochs
    return PretrainConfig(dataset=TINY_4, data_dir=data_dir, image_size=8, epochs=3, batch_size=16,
                          proj_hidden=32, proj_out=16, warmup_epochs=1, knn_every=1, knn_k=5,
                          val_fraction=0.1, precision="fp32", progress=False, num_threads=1, width=WIDTH)


def _interrupted(module, step_name: str, at: int, run) -> None:
    """``run()`` with ``module.<step_name>`` raising KeyboardInterrupt on its ``at``-th call."""
    step = getattr(module, step_name)
    setattr(module, step_name, Interrupt(step, at=at))
    try:
        run()
        raise AssertionError("the interruption did not happen")
    except KeyboardInterrupt:
        pass
    finally:
        setattr(module, step_name, step)


def _pretrain_twice(world: World, data_dir: str, root: str) -> list:
    """Rank r records every run-folder write it makes; runs an uninterrupted run and one stopped
    in epoch 3 (after the epoch-2 checkpoint) and started again."""
    writes: list = []
    originals = {name: getattr(RunDir, name) for name in WRITES}
    for name, original in originals.items():

        def record(self, *a, _name=name, _original=original, **k):
            writes.append(_name)
            return _original(self, *a, **k)

        setattr(RunDir, name, record)
    try:
        cfg = _pretrain_cfg(data_dir)
        pretrain.pretrain(cfg, f"{root}/straight")
        # second step of epoch 3, on every rank
        _interrupted(trainer, "train_step", 2 * 4 + 2, lambda: pretrain.pretrain(cfg, f"{root}/resumed"))
        checkpoint_epoch = RunDir(f"{root}/resumed").load_checkpoint("last")["epoch"]
        result = pretrain.pretrain(cfg, f"{root}/resumed")
    finally:  # the pool's next test runs in this process
        for name, original in originals.items():
            setattr(RunDir, name, original)
    return [writes, checkpoint_epoch, result]


@pytest.mark.slow
def test_two_process_pretraining_resumes_bit_identically_and_only_rank0_writes(pool, tmp_path):
    data_dir = str(tmp_path / "data")
    prepare(TINY_4, root=data_dir, image_size=8)
    (rank0, rank1) = pool.run(_pretrain_twice, data_dir, str(tmp_path))
    assert rank1[0] == [], f"rank 1 wrote to the run folder: {rank1[0]}"
    assert {"start", "log_metrics", "log_steps", "save_checkpoint", "write_result"} <= set(rank0[0])
    assert rank0[1] == rank1[1] == 2
    assert rank0[2] == rank1[2]  # every rank returns the result rank 0 wrote
    straight, resumed = RunDir(tmp_path / "straight"), RunDir(tmp_path / "resumed")
    a = torch.load(straight.checkpoint_path("final"), weights_only=True)
    b = torch.load(resumed.checkpoint_path("final"), weights_only=True)
    for part in ("encoder", "head"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), k
    rows = resumed.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # one row per epoch: one writer, no duplicates
    assert [r["loss"] for r in rows] == [r["loss"] for r in straight.read_metrics()]
    assert all(r["knn_top1"] is not None for r in rows)
    # the step trace: a row per step (12 steps), once each; a row's loss is the mean over ranks, as
    # the epoch's is, so an epoch's 4 rows average to its metrics loss
    trace = resumed.read_steps()
    assert [t["step"] for t in trace] == list(range(1, 13)) and trace == straight.read_steps()
    assert [sum(t["loss"] for t in trace[i:i + 4]) / 4 for i in (0, 4, 8)] == pytest.approx(
        [r["loss"] for r in rows], rel=1e-6)
    result = straight.read_result()
    assert result["runtime"]["world_size"] == 2 and result["runtime"]["sync_bn"] is True
    assert result["steps"] == 12 and result["n_train"] == 72


def _supervised_twice(world: World, data_dir: str, root: str) -> list:
    """A 2-process supervised run straight through and one stopped at step 10 (after the epoch-2
    checkpoint at step 8) and started again, with trace windows of 3 steps: the window of steps
    7-9 is open at the checkpoint, so the resumed row 9 is made of a saved partial sum."""
    from simpleclr.training.parts import steptrace

    rows, steptrace.STEP_ROWS = steptrace.STEP_ROWS, 5  # 12 steps: a row every 3
    cfg = SupervisedConfig(dataset=TINY_4, data_dir=data_dir, image_size=8, epochs=3, batch_size=16,
                           warmup_epochs=0, val_fraction=0.1, precision="fp32", progress=False,
                           num_threads=1, width=WIDTH)
    try:
        supervised.train_supervised(cfg, f"{root}/straight")
        _interrupted(trainer, "train_step", 10,
                     lambda: supervised.train_supervised(cfg, f"{root}/resumed"))
        return [RunDir(f"{root}/resumed").load_checkpoint("last")["step"],
                supervised.train_supervised(cfg, f"{root}/resumed")]
    finally:  # the pool's next test runs in this process
        steptrace.STEP_ROWS = rows


@pytest.mark.slow
def test_two_process_supervised_resume_logs_the_trace_of_an_uninterrupted_run(pool, tmp_path):
    # Cross-entropy differs per rank (each its shard), so a window's partial sum saved from rank 0
    # alone would make the row spanning the checkpoint a mix of rank 0's sum and the ranks' mean.
    data_dir = str(tmp_path / "data")
    prepare(TINY_4, root=data_dir, image_size=8)
    (rank0, rank1) = pool.run(_supervised_twice, data_dir, str(tmp_path))
    assert rank0[0] == rank1[0] == 8
    straight, resumed = RunDir(tmp_path / "straight"), RunDir(tmp_path / "resumed")
    assert [t["step"] for t in straight.read_steps()] == [3, 6, 9, 12]
    assert resumed.read_steps() == straight.read_steps()
    assert [r["loss"] for r in resumed.read_metrics()] == [r["loss"] for r in straight.read_metrics()]


def _pretrain_refused(world: World, data_dir: str, root: str) -> str:
    try:
        pretrain.pretrain(_pretrain_cfg(data_dir), root)
    except RunLocked as e:
        return str(e)
    return "not refused"


@pytest.mark.slow
def test_a_locked_run_folder_stops_every_rank_at_once(tmp_path):
    """Rank 0 finds the folder held by another process: every rank raises the same one line, none
    waits in a collective for a rank 0 that left."""
    data_dir = str(tmp_path / "data")
    prepare(TINY_4, root=data_dir, image_size=8)
    with RunDir(tmp_path / "held").lock():
        messages = _spawn(tmp_path, _pretrain_refused, data_dir, str(tmp_path / "held"))
    assert len(set(messages)) == 1 and f"pid {os.getpid()}" in messages[0], messages
    assert not (tmp_path / "held").exists()  # no rank wrote into it (the holder made it, empty)


def _probe_without_encoder(world: World, root: str, out: str) -> list[str]:
    cfg = LinearEvalConfig(dataset=TINY_4, data_dir=f"{root}/data", image_size=8,
                           encoder=f"{root}/no-such-run", precision="fp32", progress=False,
                           num_threads=1)
    try:
        linear_eval_stage.linear_eval_on_one_rank(cfg, f"{root}/probe")
        return ["no error", ""]
    except Exception as e:
        return [type(e).__name__, str(e)]
    finally:
        # Rank 0 stays in the group until rank 1 has answered, as a process that lives on after
        # the error does; leaving it would end rank 1's wait with gloo's "Connection closed by peer".
        deadline = time.monotonic() + 600
        while world.is_main and not Path(f"{out}.1").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


@pytest.mark.slow
def test_when_rank0_fails_linear_eval_every_rank_raises_at_once(tmp_path):
    """Rank 0 evaluates alone; its failure (here an encoder that does not exist) reaches the
    rank waiting for it, which raises one line naming rank 0's error instead of waiting forever."""
    out, seconds = str(tmp_path / "out"), 90  # process start-up is most of it
    ctx = mp.start_processes(_env_worker, args=(free_port(), out, _probe_without_encoder, str(tmp_path), out),
                             nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + seconds
    while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for p in ctx.processes:  # the ranks this test started
                p.kill()
            pytest.fail(f"the ranks were still running after {seconds} s: rank 1 waits for rank 0")
    (kind0, line0), (kind1, line1) = [torch.load(f"{out}.{r}") for r in range(WORLD)]
    assert kind0 != MainRankFailed.__name__ and "no-such-run" in line0, (kind0, line0)
    assert kind1 == MainRankFailed.__name__, (kind1, line1)
    assert line1.startswith(f"rank 0 failed in linear_eval: {kind0}: ") and "no-such-run" in line1
    assert "read rank 0's output" in line1 and "\n" not in line1
    assert not (tmp_path / "probe" / "result.json").exists()


# ---- torchrun: the CLI under the launcher, and a config's launcher from a notebook -----------
LAUNCH = f"{sys.executable} -m torch.distributed.run --standalone --nproc-per-node {WORLD}"


@pytest.mark.slow
def test_launcher_runs_pretrain_and_linear_eval_under_torchrun(tmp_path, capfd, monkeypatch):
    systmp = tmp_path / "systmp"  # the launched processes' temp folder
    systmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(systmp))
    data_dir = str(tmp_path / "data")
    prepare(TINY_4, root=data_dir, image_size=8)
    cfg = _pretrain_cfg(data_dir).replace(epochs=1, launcher=LAUNCH)
    result = pretrain.pretrain(cfg, tmp_path / "pre")  # what a notebook cell calls
    log = capfd.readouterr().out
    assert "launching:" in log and "torch.distributed.run" in log
    assert log.count('"final_loss"') == 1  # rank 0 alone prints the result
    assert result == RunDir(tmp_path / "pre").read_result()
    assert result["runtime"]["world_size"] == 2 and result["steps"] == 4
    saved = json.loads((tmp_path / "pre" / "config.json").read_text())
    assert saved["fingerprint"] == cfg.fingerprint() == cfg.replace(launcher=None).fingerprint()

    probe = LinearEvalConfig(dataset=TINY_4, data_dir=data_dir, image_size=8,
                             encoder=str(tmp_path / "pre"), label_fraction=1.0, precision="fp32",
                             progress=False, num_threads=1, launcher=LAUNCH, width=WIDTH,
                             weight_decays=(0.01,))
    out = linear_eval(probe, tmp_path / "probe")
    assert 0.0 <= out["top1"] <= out["top5"] <= 100.0
    assert out == RunDir(tmp_path / "probe").read_result()
    # torchrun's log folders went in the launcher's own temporary folder (torch's inductor cache,
    # one folder every process on the machine reuses, may be there)
    assert [p.name for p in systmp.glob("torchelastic_*")] == []


@pytest.mark.slow
def test_a_launched_stage_that_fails_raises_one_line_with_the_reason(tmp_path):
    data_dir = str(tmp_path / "data")
    prepare(TINY_4, root=data_dir, image_size=8)
    cfg = _pretrain_cfg(data_dir).replace(batch_size=15, launcher=LAUNCH)
    with pytest.raises(LaunchError, match="not divisible by the 2 processes") as e:
        pretrain.pretrain(cfg, tmp_path / "bad")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "bad" / "result.json").exists()
