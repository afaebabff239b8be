"""The self-supervised methods (training/methods/): each loss against lightly's implementation
(an independent one) and a float64 derivation from its paper with exact values on tiny inputs;
the mechanics (the target gets no gradient, tau's schedule, the FIFO queue that never holds the
current keys, SimSiam's fixed predictor lr); the recipe in config.json; and each method's run
resumed after an interruption, bit-identical to an uninterrupted one, target and queue included.
The 2-process equality of every method is in test_distributed.py."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers.datasets import TINY
from helpers.interrupt import Interrupt

from simpleclr.config import METHOD_FIELDS, METHOD_RECIPES, ConfigError, PretrainConfig
from simpleclr.runs.rundir import RunDir
from simpleclr.training import trainer
from simpleclr.training.methods import METHODS, get_method
from simpleclr.training.methods.barlow import barlow_loss
from simpleclr.training.methods.base import cosine_tau
from simpleclr.training.methods.byol import byol_loss
from simpleclr.training.methods.mocov2 import moco_loss
from simpleclr.training.methods.simclr import nt_xent
from simpleclr.training.methods.simsiam import simsiam_loss
from simpleclr.training.methods.vicreg import vicreg_loss
from simpleclr.training.parts.device import resolve_runtime
from simpleclr.training.parts.models import resnet18_encoder
from simpleclr.training.stages import pretrain

lightly_loss = pytest.importorskip("lightly.loss")  # the test extra installs it (pyproject)

NAMES = ("simclr", "mocov2", "byol", "simsiam", "barlow", "vicreg")
CPU = resolve_runtime("cpu", "fp32", channels_last=False, num_threads=1)


def _z(n: int = 16, d: int = 8, seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=dtype) * 2 + 0.5,
            torch.randn(n, d, generator=g, dtype=dtype) - 0.3)


# ---- the registry and the config -------------------------------------------------------------
def test_the_registry_names_the_configs_methods_and_maps_them_to_classes():
    assert tuple(METHODS) == NAMES == tuple(METHOD_RECIPES)
    assert all(get_method(n).name == n for n in NAMES)
    with pytest.raises(KeyError, match="unknown"):
        get_method("dino")


@pytest.mark.parametrize("name", NAMES)
def test_the_recipe_fills_every_field_left_at_none_and_nothing_else(name):
    cfg = PretrainConfig(method=name)
    for field, value in METHOD_RECIPES[name].items():
        assert getattr(cfg, field) == value, field
    others = set().union(*METHOD_FIELDS.values()) - set(METHOD_FIELDS[name])
    assert all(getattr(cfg, f) is None for f in others)
    assert PretrainConfig.from_dict(cfg.to_dict()) == cfg  # config.json reads back as what ran


def test_a_field_of_another_method_is_refused_with_one_line():
    with pytest.raises(ConfigError) as e:
        PretrainConfig(method="byol", temperature=0.2)
    assert str(e.value) == ("PretrainConfig.temperature=0.2 means nothing for method='byol': remove it "
                            "(that method's own fields: pred_hidden, tau_base, tau_final)")
    with pytest.raises(ConfigError, match="method='dino' is invalid: use one of simclr, mocov2"):
        PretrainConfig(method="dino")
    assert PretrainConfig(method="mocov2", temperature=0.1).temperature == 0.1  # its own: kept


def test_simclrs_fingerprint_is_the_one_it_had_before_the_methods():
    """Run folders written before the other methods existed are still found finished."""
    assert PretrainConfig().fingerprint() == "a5ca033fa6296bba"
    assert PretrainConfig(method="byol").fingerprint() != PretrainConfig().fingerprint()


# ---- the losses against lightly (an independent implementation) -----------------------------
def test_nt_xent_equals_lightlys_ntxent():
    z1, z2 = _z()
    ref = lightly_loss.NTXentLoss(temperature=0.3)(z1, z2)
    torch.testing.assert_close(nt_xent(z1, z2, 0.3), ref, rtol=1e-12, atol=1e-12)


def test_moco_loss_equals_lightlys_ntxent_with_a_memory_bank():
    q, k = _z(seed=1)
    queue = F.normalize(torch.randn(8, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64), dim=0)
    ref = lightly_loss.NTXentLoss(temperature=0.2, memory_bank_size=(32, 8))
    ref.memory_bank.bank = queue.T.clone()  # lightly keeps (size, dim)
    torch.testing.assert_close(moco_loss(q, k, queue, 0.2), ref(q, k), rtol=1e-12, atol=1e-12)


def test_byol_and_simsiam_losses_equal_lightlys_negative_cosine_similarity():
    p, z = _z(seed=3)
    neg_cos = lightly_loss.NegativeCosineSimilarity()(p, z.detach())
    torch.testing.assert_close(byol_loss(p, z), 2 + 2 * neg_cos, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(simsiam_loss(p, z), neg_cos, rtol=1e-12, atol=1e-12)


def test_barlow_loss_equals_lightlys_times_the_recipes_scale():
    z1, z2 = _z(n=32, d=6, seed=4)
    ref = lightly_loss.BarlowTwinsLoss(lambda_param=0.0051)(z1, z2)
    torch.testing.assert_close(barlow_loss(z1, z2, 0.0051, 0.1), 0.1 * ref, rtol=1e-10, atol=1e-12)


def test_vicreg_loss_differs_from_lightlys_by_half_the_variance_term():
    """lightly averages the two views' variance terms, solo-learn (the recipe, and the paper's
    code) sums them: the difference is exactly var_weight * (v(z1) + v(z2)) / 2."""
    z1, z2 = _z(n=32, d=6, seed=5)
    z1 = z1 * 0.3  # standard deviations below 1: the hinge is active
    ref = lightly_loss.VICRegLoss(lambda_param=25.0, mu_param=25.0, nu_param=1.0)(z1, z2)

    def v(z):  # the paper's hinge on the standard deviation, from scratch
        return sum(max(0.0, 1 - math.sqrt(float(z[:, j].var()) + 1e-4)) for j in range(z.shape[1])) / z.shape[1]

    ours = vicreg_loss(z1, z2, 25.0, 25.0, 1.0)
    assert v(z1) > 0.1
    torch.testing.assert_close(ours - ref, torch.tensor(25.0 * (v(z1) + v(z2)) / 2, dtype=torch.float64),
                               rtol=1e-10, atol=1e-10)


# ---- float64 derivations from the papers, and exact values on tiny inputs -------------------
def test_moco_loss_by_hand():
    """One query, its key and two negatives: -log(e^{q.k/T} / (e^{q.k/T} + sum e^{q.n/T}))."""
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    k = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    queue = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)  # columns (0, 1), (-1, 0)
    t = 0.5
    expected = -math.log(math.exp(0.6 / t) / (math.exp(0.6 / t) + math.exp(0.0) + math.exp(-1.0 / t)))
    assert float(moco_loss(q, k, queue, t)) == pytest.approx(expected, rel=1e-12)


def test_byol_and_simsiam_exact_values():
    z = torch.tensor([[1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
    assert float(byol_loss(z, 3 * z)) == pytest.approx(0.0, abs=1e-12)  # same direction
    assert float(byol_loss(z, -z)) == pytest.approx(4.0, rel=1e-12)  # opposite: 2 - 2 * (-1)
    assert float(simsiam_loss(z, z)) == pytest.approx(-1.0, rel=1e-12)
    p = torch.tensor([[1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    simsiam_loss(p, target).backward()
    assert target.grad is None  # the stop-gradient
    assert p.grad[0, 1] == pytest.approx(-1.0)  # d(-cos)/dp towards the target


def test_barlow_loss_from_its_definition_and_at_the_identity():
    z1, z2 = _z(n=12, d=4, seed=6)
    s1 = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + 1e-5)
    s2 = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + 1e-5)
    c = [[float((s1[:, i] * s2[:, j]).sum()) / 12 for j in range(4)] for i in range(4)]
    expected = sum((1 - c[i][i]) ** 2 for i in range(4)) + 0.5 * sum(
        c[i][j] ** 2 for i in range(4) for j in range(4) if i != j)
    assert float(barlow_loss(z1, z2, 0.5, 2.0)) == pytest.approx(2.0 * expected, rel=1e-10)
    # orthogonal, centred columns of equal norm: C is the identity (up to BN's eps): loss ~ 0
    h = torch.tensor([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float64)
    eye = h[:, 1:]  # three orthogonal, centred columns
    assert float(barlow_loss(eye, eye, 0.0051, 1.0)) == pytest.approx(0.0, abs=1e-4)


def test_vicreg_loss_from_its_definition():
    z1, z2 = _z(n=10, d=3, seed=7)
    inv = float(((z1 - z2) ** 2).mean())

    def var(z):
        return sum(max(0.0, 1 - math.sqrt(float(z[:, j].var()) + 1e-4)) for j in range(3)) / 3

    def cov(z):
        zc = z - z.mean(0)
        m = (zc.T @ zc) / 9
        return sum(float(m[i, j]) ** 2 for i in range(3) for j in range(3) if i != j) / 3

    expected = 2.0 * inv + 3.0 * (var(z1) + var(z2)) + 5.0 * (cov(z1) + cov(z2))
    assert float(vicreg_loss(z1, z2, 2.0, 3.0, 5.0)) == pytest.approx(expected, rel=1e-10)


# ---- mechanics -------------------------------------------------------------------------------
def _parts(name: str, total: int = 10, warmup: int = 0, **kw) -> trainer.TrainParts:
    extra = {"mocov2": {"queue_size": 24}, "byol": {"pred_hidden": 16}, "simsiam": {"pred_hidden": 16}}
    cfg = PretrainConfig(method=name, batch_size=8, width=8, epochs=1, warmup_epochs=0.0, proj_hidden=32,
                         proj_out=16, precision="fp32", channels_last=False, **{**extra.get(name, {}), **kw})
    torch.manual_seed(0)
    return pretrain.build_pretrain(cfg, CPU, image_size=8, mean=(0.5,) * 3, std=(0.25,) * 3,
                                   total_steps=total, warmup_steps=warmup)


def _images(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["mocov2", "byol", "simsiam", "barlow", "vicreg"])
def test_solo_learns_methods_normalise_each_view_by_its_own_batch_statistics(name):
    """As solo-learn forwards its views one at a time, batch norm sees one view per pass: the
    method's output on the stacked pair equals its network run on each view alone, and differs
    from one pass over both (SimCLR's, as its reference code normalises the views together)."""
    parts = _parts(name)
    model = parts.model.train()
    x = model.views(_images(8), torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    out = model(x)
    first = out[0] if isinstance(out, tuple) else out
    alone = torch.cat([model.projector(model.encoder(v)) for v in x.chunk(2)])
    projected = alone
    if name in ("byol", "simsiam"):  # their first output is the predictor's
        alone = torch.cat([model.predictor(a) for a in alone.chunk(2)])
    torch.testing.assert_close(first, alone)
    assert not torch.allclose(model.projector(model.encoder(x)), projected, atol=1e-3)


@pytest.mark.parametrize("name", ["byol", "barlow", "vicreg"])
def test_the_asymmetric_and_vicreg_recipes_jitter_saturation_by_02(name):
    """solo-learn's asymmetric.yaml and vicreg.yaml: brightness and contrast 0.4, saturation 0.2.
    The recipe records it in the config and the views draw saturation factors in [0.8, 1.2] while
    brightness still spans [0.6, 1.4]."""
    assert PretrainConfig(method=name).jitter_saturation == 0.2
    assert PretrainConfig(method="simclr").jitter_saturation is None  # 0.8 x jitter_strength
    aug = _parts(name).model.augment
    p = aug.sample_params(4000, 8, 8, torch.Generator().manual_seed(0))
    assert 0.8 <= float(p["saturation"].min()) < 0.81 and 1.19 < float(p["saturation"].max()) <= 1.2
    assert float(p["brightness"].min()) < 0.61 and float(p["brightness"].max()) > 1.39
    from simpleclr.training.parts.augment import SimCLRAugment
    mine, base = (SimCLRAugment(8, (0.5,) * 3, (0.25,) * 3, jitter_strength=0.5, saturation=sat).sample_params(
        4000, 8, 8, torch.Generator().manual_seed(0)) for sat in (0.2, None))
    for key in ("brightness", "contrast", "hue", "top", "order"):  # one stream: only saturation moves
        torch.testing.assert_close(mine[key], base[key])
    torch.testing.assert_close(mine["saturation"] - 1, (base["saturation"] - 1) / 2)


@pytest.mark.parametrize("name", ["mocov2", "byol"])
def test_the_target_gets_no_gradient_and_moves_only_by_its_ema(name):
    parts = _parts(name)
    m = parts.model
    online = dict(m.encoder.named_parameters())
    before = {n: p.detach().clone() for n, p in m.target_encoder.named_parameters()}
    assert all(not p.requires_grad for p in m.target_encoder.parameters())
    assert all(not p.requires_grad for p in m.target_projector.parameters())
    trainer.train_step(parts, _images(), None, torch.Generator().manual_seed(1), step=3, total_steps=10)
    tau = cosine_tau(3, 10, *m.tau)
    for n, p in m.target_encoder.named_parameters():
        assert p.grad is None, n
        torch.testing.assert_close(p, tau * before[n] + (1 - tau) * online[n].detach(), rtol=1e-6, atol=1e-7)
    targets = {id(p) for p in m.target_encoder.parameters()} | {id(p) for p in m.target_projector.parameters()}
    assert not targets & {id(p) for g in parts.optimizer.param_groups for p in g["params"]}


def test_tau_follows_a_half_cosine_from_base_to_final():
    assert cosine_tau(0, 100, 0.99, 1.0) == pytest.approx(0.99)
    assert cosine_tau(50, 100, 0.99, 1.0) == pytest.approx(0.995)
    assert cosine_tau(100, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert cosine_tau(25, 100, 0.99, 0.999) == pytest.approx(0.999 - 0.009 * (math.cos(math.pi / 4) + 1) / 2)


def test_the_queue_is_fifo_and_never_holds_the_current_keys_as_negatives():
    parts = _parts("mocov2")
    m = parts.model
    seen = []
    real_loss = m.loss

    def spy(out, labels=None):
        keys = F.normalize(out[1].detach(), dim=1)
        seen.append((m.queue.clone(), keys))
        return real_loss(out, labels)

    m.loss = spy
    for step in range(4):  # 4 steps of 8 keys through a queue of 24: the first batch leaves again
        trainer.train_step(parts, _images(seed=step), None, torch.Generator().manual_seed(step), step, 10)
    for step, (queue, keys) in enumerate(seen):
        # the negatives the loss saw: none of them is a key of its own batch
        assert torch.einsum("nd,vdk->vnk", keys, queue).max() < 1 - 1e-6, step
    # after each step the queue holds the newest keys where the oldest were: columns 8s .. 8s+7
    k1_2, k2_3 = seen[2][1].chunk(2), seen[3][1].chunk(2)
    torch.testing.assert_close(seen[3][0][0, :, 16:24].T, k1_2[0])  # step 2's view-1 keys, queue 0
    torch.testing.assert_close(seen[3][0][1, :, 16:24].T, k1_2[1])
    torch.testing.assert_close(m.queue[0, :, 0:8].T, k2_3[0])  # step 3 wrapped round to the front
    assert int(m.queue_ptr) == 8


def test_the_queue_matches_lightlys_memory_bank_update():
    parts = _parts("mocov2")
    m = parts.model
    bank = lightly_loss.NTXentLoss(temperature=0.2, memory_bank_size=(24, 16)).memory_bank
    bank.bank = m.queue[0].T.clone()
    bank.bank_ptr.zero_()
    keys = F.normalize(torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(4)), dim=2)
    for _ in range(4):  # wraps round once
        m.enqueue(keys)
        bank(keys[0], update=True)
        keys = keys.roll(1, dims=1)
    torch.testing.assert_close(m.queue[0].T, bank.bank)


def test_simsiams_predictor_keeps_its_base_lr_while_the_rest_follows_the_schedule():
    parts = _parts("simsiam", total=10, warmup=2)
    lr = {g["name"]: [] for g in parts.optimizer.param_groups}
    for _ in range(6):
        for g in parts.optimizer.param_groups:
            lr[g["name"]].append(g["lr"])
        parts.optimizer.step()  # no gradients: nothing moves, the schedule advances in order
        parts.scheduler.step()
    base = parts.lr
    assert lr["static/decay"] == lr["static/no_decay"] == [base] * 6
    assert lr["model/decay"][0] == pytest.approx(base / 2) and lr["model/decay"][1] == pytest.approx(base)
    assert lr["model/decay"][5] < base
    pred = {id(p) for p in parts.model.predictor.parameters()}
    static = {id(p) for g in parts.optimizer.param_groups if g["name"].startswith("static/") for p in g["params"]}
    assert pred == static


@pytest.mark.parametrize("w_value, g_value", [(10.0, 1e-3), (1.0, 0.5)])
def test_lars_clip_is_solo_learns_larc_clip(w_value, g_value):
    """With clip (solo-learn's clip_lars_lr), a layer steps by min(trust ratio, lr) times its
    gradient: lr where the ratio is large (10 / 1e-3), the ratio itself where it is below lr
    (0.02 x ||w|| 4 / ||g|| 2 = 0.04 < 0.5), not lr x ratio (0.02). The reference is solo-learn's update
    written out in float64 (weight decay 0, where its trust ratio's denominator equals ours)."""
    from simpleclr.training.parts.optim import LARS

    lr, eta = 0.5, 0.02
    w = torch.nn.Parameter(torch.full((4, 4), w_value))
    w.grad = torch.full((4, 4), g_value)
    LARS([w], lr=lr, momentum=0.0, eta=eta, clip=True).step()
    w64, g64 = torch.full((4, 4), w_value, dtype=torch.float64), torch.full((4, 4), g_value, dtype=torch.float64)
    lars_lr = min(eta * float(w64.norm()) / (float(g64.norm()) + 1e-8) / lr, 1.0)  # solo: lars_lr / lr, capped
    expected = w64 - lr * lars_lr * g64  # solo: p -= lr * (lars_lr * g)
    torch.testing.assert_close(w.detach().double(), expected, rtol=1e-6, atol=1e-7)
    if w_value == 1.0:  # where lr x ratio would step half as far (1 - 0.02 x 0.5)
        assert float(w.detach()[0, 0]) == pytest.approx(1.0 - 0.04 * 0.5, rel=1e-6)


@pytest.mark.parametrize("name", ["simclr", "byol", "simsiam", "barlow", "vicreg"])
def test_every_method_learns_something_on_a_fixed_batch(name):
    """Ten steps on one batch with fixed views lower the loss: the gradient reaches the loss's
    terms. (MoCo's queue fills with this very batch's keys, so its loss rises by design.)"""
    parts = _parts(name, lr=0.05 if name != "byol" else 0.2)
    x = _images(16)
    losses = [float(trainer.train_step(parts, x, None, torch.Generator().manual_seed(0), s, 10)[0])
              for s in range(10)]
    assert losses[-1] < losses[0], losses


# ---- resume, bit-identical, for every method -------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("data"))  # the generated data set is made on first use


def _run_cfg(data_dir: str, name: str) -> PretrainConfig:
    extra = {"mocov2": {"queue_size": 40}, "byol": {"pred_hidden": 16}, "simsiam": {"pred_hidden": 16}}
    return PretrainConfig(method=name, dataset=TINY, data_dir=data_dir, image_size=8, epochs=3, batch_size=40,
                          proj_hidden=32, proj_out=16, warmup_epochs=1, knn_every=0, progress=False,
                          num_threads=1, width=8, precision="fp32", **extra.get(name, {}))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES[1:])  # SimCLR's: test_train.py
def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(data_dir, tmp_path, monkeypatch, name):
    cfg = _run_cfg(data_dir, name)
    whole = pretrain.pretrain(cfg, tmp_path / "whole")
    monkeypatch.setattr(trainer, "train_step", Interrupt(trainer.train_step, at=4))  # in epoch 2
    with pytest.raises(KeyboardInterrupt):
        pretrain.pretrain(cfg, tmp_path / "resumed")
    assert RunDir(tmp_path / "resumed").load_checkpoint("last")["epoch"] == 1
    monkeypatch.undo()
    resumed = pretrain.pretrain(cfg, tmp_path / "resumed")
    a = RunDir(tmp_path / "whole").load_checkpoint("last")["model"]
    b = RunDir(tmp_path / "resumed").load_checkpoint("last")["model"]
    assert a.keys() == b.keys()
    if name in ("mocov2", "byol"):
        assert any(k.startswith("target_encoder.") for k in a)
    if name == "mocov2":
        assert {"queue", "queue_ptr"} <= set(a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss"] for r in RunDir(tmp_path / "whole").read_metrics()] == \
        [r["loss"] for r in RunDir(tmp_path / "resumed").read_metrics()]
    assert whole["method"] == resumed["method"] == name
    recorded = RunDir(tmp_path / "whole").read_config()["config"]  # the recipe as it ran
    assert {k: recorded[k] for k in METHOD_RECIPES[name] if k in ("lr", "weight_decay", "optimizer")} == \
        {k: METHOD_RECIPES[name][k] for k in ("lr", "weight_decay", "optimizer")}


@pytest.mark.parametrize("name,size,blur,solarize", [
    ("simclr", 32, (0.0, 0.0), (0.0, 0.0)), ("simclr", 64, (0.5, 0.5), (0.0, 0.0)),
    ("byol", 32, (0.0, 0.0), (0.0, 0.2)), ("byol", 64, (1.0, 0.1), (0.0, 0.2)),
    ("barlow", 64, (1.0, 0.1), (0.0, 0.2)), ("mocov2", 64, (0.5, 0.5), (0.0, 0.0)),
    ("simsiam", 32, (0.0, 0.0), (0.0, 0.0)), ("vicreg", 64, (0.0, 0.0), (0.1, 0.1))])
def test_each_method_draws_its_recipes_views_scaled_to_the_image_size(name, size, blur, solarize):
    """Blur per view by the size rule (off below 64 px; BYOL's asymmetric 1.0 / 0.1 from 64 px),
    solarization per view as the recipe's augmentation file says."""
    cfg = PretrainConfig(method=name)
    aug = get_method(name)(cfg, resnet18_encoder("cifar", 8), size, (0.5,) * 3, (0.25,) * 3).augment
    assert (aug.blur_probs, aug.solarize_probs) == (blur, solarize)
    assert aug.scale[0] == METHOD_RECIPES[name]["crop_scale_min"]


def test_a_solarized_view_inverts_the_bright_pixels_of_that_view_only():
    from simpleclr.training.parts.augment import SimCLRAugment

    aug = SimCLRAugment(8, (0.0,) * 3, (1.0,) * 3, scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter_prob=0.0,
                        gray_prob=0.0, flip_prob=0.0, solarize_prob=(0.0, 1.0))
    x = torch.full((2, 3, 8, 8), 204, dtype=torch.uint8)  # 0.8 after scaling to [0, 1]
    v1, v2 = aug.two_views(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(v1, torch.full_like(v1, 0.8))
    torch.testing.assert_close(v2, torch.full_like(v2, 0.2))
