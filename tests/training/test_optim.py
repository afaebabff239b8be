"""LARS against a hand-computed update, the decay/no-decay grouping, lr scaling and the schedule."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from simpleclr.config import PretrainConfig, SupervisedConfig
from simpleclr.training.parts.optim import (LARS, build_optimizer, param_groups, scaled_lr, warmup_cosine,
                                      warmup_cosine_scheduler)


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def _cfg(**kw) -> SimpleNamespace:
    base = dict(optimizer="lars", weight_decay=0.1, momentum=0.9)
    base.update(kw)
    return SimpleNamespace(**base)


def _set_grads(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)


# ---- grouping ------------------------------------------------------------------------------
def test_bias_and_norm_parameters_go_to_the_no_decay_group():
    model = _tiny()
    groups = {g["name"]: g for g in param_groups(model, lr=1.0, weight_decay=0.1)}
    assert set(groups) == {"model/decay", "model/no_decay"}
    decay_ids = {id(p) for p in groups["model/decay"]["params"]}
    no_decay_ids = {id(p) for p in groups["model/no_decay"]["params"]}
    assert decay_ids == {id(model[0].weight), id(model[2].weight)}
    assert no_decay_ids == {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[2].bias)}
    assert groups["model/decay"]["weight_decay"] == 0.1 and groups["model/decay"]["lars_adapt"]
    assert groups["model/no_decay"]["weight_decay"] == 0.0 and not groups["model/no_decay"]["lars_adapt"]


class _Clf(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4, 2)


@pytest.mark.parametrize("kind", ["sgd", "adamw", "lars"])
def test_fine_tuning_gives_the_encoder_its_own_lr(kind):
    model = _Clf()
    opt = build_optimizer(model, _cfg(optimizer=kind, encoder_lr_scale=0.1, nesterov=True), lr=0.5)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert set(by_name) == {"encoder/decay", "encoder/no_decay", "model/decay", "model/no_decay"}
    assert by_name["encoder/decay"]["lr"] == pytest.approx(0.05)
    assert by_name["model/decay"]["lr"] == pytest.approx(0.5)
    assert by_name["encoder/no_decay"]["weight_decay"] == 0.0
    assert by_name["model/decay"]["weight_decay"] == 0.1
    n_opt = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in model.parameters())
    if kind == "sgd":
        assert all(g["nesterov"] for g in opt.param_groups)


def test_frozen_parameters_are_left_out():
    model = _Clf()
    model.encoder.requires_grad_(False)
    opt = build_optimizer(model, _cfg(optimizer="sgd", encoder_lr_scale=0.0), lr=0.1)
    params = {id(p) for g in opt.param_groups for p in g["params"]}
    assert params == {id(model.fc.weight), id(model.fc.bias)}


def test_sgd_does_not_decay_biases():
    model = _tiny()
    opt = build_optimizer(model, _cfg(optimizer="sgd", weight_decay=0.5, momentum=0.0), lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for p, b in zip(model.parameters(), before):  # zero gradient: only weight decay moves a tensor
        expected = b * 0.5 if p.ndim > 1 else b
        assert torch.allclose(p.detach(), expected)


# ---- LARS ----------------------------------------------------------------------------------
def _reference_lars(params, grads, bufs, *, lr, momentum, wd, eta, adapt, nesterov):
    """SimCLR's LARS rule written out per tensor in float64."""
    out, new_bufs = [], []
    for w, g, v in zip(params, grads, bufs):
        w, g, v = w.double(), g.double(), v.double()
        g = g + wd * w
        ratio = 1.0
        if adapt:
            wn, gn = w.norm().item(), g.norm().item()
            ratio = eta * wn / gn if wn > 0 and gn > 0 else 1.0
        step = lr * ratio * g
        v = momentum * v + step
        update = momentum * v + step if nesterov else v
        out.append(w - update)
        new_bufs.append(v)
    return out, new_bufs


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_matches_the_hand_computed_update_over_two_steps(nesterov):
    model = _tiny()
    opt = build_optimizer(model, _cfg(optimizer="lars", nesterov=nesterov), lr=0.7)
    assert isinstance(opt, LARS)
    groups = {g["name"]: g for g in opt.param_groups}
    ref = {name: ([p.detach().clone() for p in g["params"]], [torch.zeros_like(p) for p in g["params"]])
           for name, g in groups.items()}
    for step in range(2):
        _set_grads(model, seed=step)
        for name, g in groups.items():
            grads = [p.grad.clone() for p in g["params"]]
            decay = name.endswith("/decay")
            ref[name] = _reference_lars(ref[name][0], grads, ref[name][1], lr=0.7, momentum=0.9,
                                        wd=0.1 if decay else 0.0, eta=0.001, adapt=decay,
                                        nesterov=nesterov)
        opt.step()
        for name, g in groups.items():
            for p, r in zip(g["params"], ref[name][0]):
                assert torch.allclose(p.detach().double(), r, rtol=1e-6, atol=1e-7), (name, step)


def test_lars_trust_ratio_makes_the_step_relative_to_the_weight_norm():
    w = nn.Parameter(torch.full((10, 10), 2.0))  # ||w|| = 20
    w.grad = torch.full((10, 10), 1000.0)
    opt = LARS([w], lr=1.0, momentum=0.0, eta=0.001)
    opt.step()
    # step = lr * eta * ||w|| / ||g|| * g, whose norm is eta * ||w|| whatever the gradient's scale
    assert torch.allclose(w.detach(), torch.full((10, 10), 2.0 - 0.001 * 20 / 10))


def test_lars_zero_weights_fall_back_to_plain_sgd():
    w = nn.Parameter(torch.zeros(3, 3))
    w.grad = torch.ones(3, 3)
    LARS([w], lr=0.5, momentum=0.0).step()
    assert torch.allclose(w.detach(), torch.full((3, 3), -0.5))


def test_lars_state_round_trips():
    model = _tiny()
    opt = build_optimizer(model, _cfg(), lr=0.3)
    _set_grads(model, 0)
    opt.step()
    opt2 = build_optimizer(model, _cfg(), lr=0.3)
    opt2.load_state_dict(opt.state_dict())
    for p in model.parameters():
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[p]["momentum_buffer"])


def test_build_optimizer_takes_either_training_config():
    """Both stages' configs are TrainingConfigs: SimCLR's gets LARS without nesterov or an encoder
    lr (it has neither field), supervised training its SGD with nesterov and the encoder's lr."""
    pre = build_optimizer(_Clf(), PretrainConfig(), lr=0.5)
    assert isinstance(pre, LARS)
    assert {g["name"] for g in pre.param_groups} == {"model/decay", "model/no_decay"}
    assert all(not g["nesterov"] and g["momentum"] == 0.9 for g in pre.param_groups)
    assert {g["name"]: g["weight_decay"] for g in pre.param_groups} == {"model/decay": 1e-4,
                                                                        "model/no_decay": 0.0}
    sup = build_optimizer(_Clf(), SupervisedConfig(init="imagenet", encoder_lr_scale=0.1), lr=0.5)
    assert isinstance(sup, torch.optim.SGD)
    by_name = {g["name"]: g for g in sup.param_groups}
    assert set(by_name) == {"encoder/decay", "encoder/no_decay", "model/decay", "model/no_decay"}
    assert by_name["encoder/decay"]["lr"] == pytest.approx(0.05) and by_name["model/decay"]["lr"] == 0.5
    assert by_name["model/decay"]["weight_decay"] == 5e-4
    assert all(g["nesterov"] for g in sup.param_groups)
    adamw = build_optimizer(_Clf(), SupervisedConfig(optimizer="adamw"), lr=0.5)
    assert isinstance(adamw, torch.optim.AdamW) and len(adamw.param_groups) == 2


# ---- lr scaling and schedule ---------------------------------------------------------------
def test_scaled_lr_rules():
    assert scaled_lr(0.3, 512, "linear") == pytest.approx(0.6)
    assert scaled_lr(0.075, 4096, "sqrt") == pytest.approx(0.075 * 64)
    assert scaled_lr(0.1, 1024, "none") == 0.1
    with pytest.raises(ValueError, match="unknown"):
        scaled_lr(0.1, 256, "cubic")


def test_warmup_cosine_values_at_known_points():
    total, warm = 110, 10
    assert warmup_cosine(0, total, warm) == pytest.approx(0.1)
    assert warmup_cosine(4, total, warm) == pytest.approx(0.5)
    assert warmup_cosine(9, total, warm) == pytest.approx(1.0)  # last warm-up step
    assert warmup_cosine(10, total, warm) == pytest.approx(1.0)  # cosine starts at its peak
    assert warmup_cosine(60, total, warm) == pytest.approx(0.5)  # halfway through the cosine
    assert warmup_cosine(35, total, warm) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert warmup_cosine(109, total, warm) == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert warmup_cosine(110, total, warm) == 0.0
    assert warmup_cosine(0, 100, 0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        warmup_cosine(0, 10, 11)


def test_scheduler_steps_per_iteration_over_the_whole_run():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 2.0}], lr=2.0)
    sched = warmup_cosine_scheduler(opt, total_steps=20, warmup_steps=4)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([2.0 * warmup_cosine(i, 20, 4) for i in range(20)])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)
    # a fresh scheduler restored from the state continues where this one stopped
    opt2 = torch.optim.SGD([{"params": [p], "lr": 2.0}], lr=2.0)
    sched2 = warmup_cosine_scheduler(opt2, total_steps=20, warmup_steps=4)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.last_epoch == 20
