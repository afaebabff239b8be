"""Feature extraction, weighted kNN, top-k, the linear probe (vs scikit-learn) and linear_eval."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from simpleclr import data
from simpleclr.training import probe as evaluate
from simpleclr.training.parts import models
from simpleclr.training.parts.augment import normalize
from simpleclr.config import LinearEvalConfig
from simpleclr.training.parts.device import resolve_runtime
from simpleclr.training.probe import (best_on_validation, extract_features, fit_linear_probe, knn_predict,
                                      knn_top1, topk_accuracy)
from simpleclr.training.stages import linear_eval as linear_eval_stage
from simpleclr.training.stages.linear_eval import linear_eval
from simpleclr.runs import predictions
from simpleclr.runs.rundir import RunConflict, RunDir

torch.set_num_threads(min(2, torch.get_num_threads()))
FP32 = resolve_runtime("cpu", "fp32", channels_last=False)


# ---- extract_features -------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_encoder() -> nn.Module:
    torch.manual_seed(0)
    enc = models.resnet18_encoder("cifar")
    with torch.no_grad():  # move BN running stats away from their defaults
        enc.train()(torch.randn(8, 3, 8, 8))
    return enc


def test_extract_features_matches_a_plain_eval_forward(small_encoder):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 12, 12), dtype=torch.uint8, generator=g)
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
    enc = small_encoder.train()  # a caller's training-mode encoder
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    feats = extract_features(enc, images, mean, std, FP32, size=16, batch_size=4)
    assert enc.training  # mode restored
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in before.items())  # BN stats untouched
    with torch.no_grad():
        ref = enc.eval()(normalize(images, mean, std, 16))
    enc.train()
    assert feats.dtype == torch.float32 and feats.device.type == "cpu" and feats.shape == (10, 512)
    assert torch.allclose(feats, ref, atol=1e-5, rtol=1e-4)
    assert not feats.requires_grad

    # bf16 autocast + channels_last: the same features to bf16 precision
    fast = extract_features(enc, images, mean, std, resolve_runtime("cpu", "bf16", True), size=16)
    cos = nn.functional.cosine_similarity(fast, ref, dim=1)
    assert fast.dtype == torch.float32 and float(cos.min()) > 0.99


def test_extract_features_rejects_bad_input(small_encoder):
    with pytest.raises(ValueError, match="uint8"):
        extract_features(small_encoder, torch.rand(2, 3, 8, 8), (0.5,) * 3, (0.5,) * 3, FP32)
    assert extract_features(small_encoder, torch.zeros(0, 3, 8, 8, dtype=torch.uint8),
                            (0.5,) * 3, (0.5,) * 3, FP32).shape == (0, 512)


# ---- kNN ----------------------------------------------------------------------------------
def test_knn_on_a_constructed_problem_is_exact():
    # Three classes along orthogonal axes; lengths differ (cosine similarity ignores them).
    axes = torch.eye(3)
    bank = torch.cat([axes * s for s in (1.0, 2.0, 5.0)])  # 9 entries, 3 per class
    bank_labels = torch.tensor([0, 1, 2] * 3)
    queries = torch.tensor([[1.0, 0.1, 0.0], [0.0, 3.0, 0.2], [0.1, 0.0, 0.7],
                            [0.2, 1.0, 0.0], [0.9, 0.0, 0.1], [0.0, 0.2, 1.0]])
    query_labels = torch.tensor([0, 1, 2, 0, 0, 2])  # the 4th lies on class 1's axis: one miss
    assert knn_top1(bank, bank_labels, queries, query_labels, k=3, temperature=0.1,
                    num_classes=3) == pytest.approx(500 / 6)
    # k larger than the bank: all 9 vote, but the 3 nearest dominate at T=0.1
    assert knn_top1(bank, bank_labels, queries, query_labels, k=200, temperature=0.1,
                    num_classes=3) == pytest.approx(500 / 6)


def _knn_reference(bank, bank_labels, queries, k, t, c):
    bank = bank.double() / bank.double().norm(dim=1, keepdim=True)
    out = []
    for q in queries.double():
        sims = bank @ (q / q.norm())
        order = sorted(range(len(sims)), key=lambda i: -float(sims[i]))[:k]
        votes = [0.0] * c
        for i in order:
            votes[int(bank_labels[i])] += math.exp(float(sims[i]) / t)
        out.append(max(range(c), key=lambda j: votes[j]))
    return torch.tensor(out)


def test_knn_matches_a_brute_force_reference_and_chunks():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=g)
    bank_labels = torch.randint(0, 5, (120,), generator=g)
    bank = centers[bank_labels] + 1.5 * torch.randn(120, 16, generator=g)
    query_labels = torch.randint(0, 5, (40,), generator=g)
    queries = centers[query_labels] + 1.5 * torch.randn(40, 16, generator=g)
    ref = _knn_reference(bank, bank_labels, queries, 20, 0.1, 5)
    pred = knn_predict(bank, bank_labels, queries, k=20, temperature=0.1, num_classes=5, chunk_size=7)
    assert torch.equal(pred, ref)
    acc = knn_top1(bank, bank_labels, queries, query_labels, k=20, temperature=0.1, num_classes=5)
    assert acc == pytest.approx(float((ref == query_labels).float().mean()) * 100)
    assert 20 < acc < 100  # a non-trivial problem
    # a tiny temperature stays finite (1-NN in effect)
    nn1 = knn_predict(bank, bank_labels, queries, k=20, temperature=1e-3, num_classes=5)
    assert torch.equal(nn1, _knn_reference(bank, bank_labels, queries, 1, 1.0, 5))


# ---- top-k ----------------------------------------------------------------------------------
def test_topk_matches_a_manual_count():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 8, generator=g)
    labels = torch.randint(0, 8, (50,), generator=g)
    got = topk_accuracy(logits, labels, ks=(1, 3, 5))
    for k in (1, 3, 5):
        hits = sum(int(labels[i]) in sorted(range(8), key=lambda j: -float(logits[i, j]))[:k]
                   for i in range(50))
        assert got[f"top{k}"] == pytest.approx(100.0 * hits / 50)
    assert topk_accuracy(logits[:, :3], labels.clamp(max=2), ks=(1, 5))["top5"] == 100.0


# ---- the linear probe -----------------------------------------------------------------------
def _blobs(n, d, c, seed, noise=2.0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(c, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    x = torch.relu(centers[y] + noise * torch.randn(n, d, generator=g)) * 3 + 1  # ReLU-like, shifted
    return x, y


@pytest.mark.parametrize("wd", [1e-2, 1e-3])
def test_probe_agrees_with_scikit_learn(wd):
    from sklearn.linear_model import LogisticRegression

    x_all, y_all = _blobs(3000, 32, 10, seed=0)
    x, y, xt, yt = x_all[:2000], y_all[:2000], x_all[2000:], y_all[2000:]
    probe = fit_linear_probe(x, y, 10, wd)
    ours = topk_accuracy(evaluate.probe_logits(probe, xt), yt)["top1"]

    mu, sd = x.mean(0), x.std(0, unbiased=False)
    clf = LogisticRegression(C=1.0 / (len(x) * wd), max_iter=5000, tol=1e-8)
    clf.fit(((x - mu) / sd).double().numpy(), y.numpy())
    theirs = 100.0 * float((clf.predict(((xt - mu) / sd).double().numpy()) == yt.numpy()).mean())
    assert 30 < theirs < 99  # a problem where the two could disagree
    assert abs(ours - theirs) <= 1.0
    # the same optimum, not just the same accuracy (fitted to a tight tolerance), in standardised space
    tight = fit_linear_probe(x, y, 10, wd, tolerance=1e-6)
    w_std = tight.weight.detach().double() * sd.double()
    assert torch.allclose(w_std, torch.from_numpy(clf.coef_), atol=2e-3 * float(w_std.abs().max()))


def test_probe_warm_start_reaches_the_same_optimum_and_checks_input():
    x, y = _blobs(600, 16, 4, seed=2)
    cold = fit_linear_probe(x, y, 4, 1e-3, tolerance=1e-6)
    warm = fit_linear_probe(x, y, 4, 1e-3, tolerance=1e-6, init=fit_linear_probe(x, y, 4, 1e-1))
    # float32 L-BFGS stops at max |grad| <= 1e-6: logits agree to ~1e-4 of their scale
    assert torch.allclose(evaluate.probe_logits(cold, x), evaluate.probe_logits(warm, x), atol=5e-3)
    assert cold.fit_info["grad_max"] < 1e-4  # float32 stalls near 1e-5; scikit-learn stops at 1e-4
    with pytest.raises(ValueError, match="labels"):
        fit_linear_probe(x, y + 4, 4, 1e-3)
    with pytest.raises(ValueError, match="weight_decay"):
        fit_linear_probe(x, y, 4, -1.0)


# ---- linear_eval ----------------------------------------------------------------------------
SYNTH = "synthetic-cifar100:classes=10,train=30,test=10"
WDS = (1e-2, 1e-1, 1.0)  # larger penalties converge in fewer L-BFGS steps: keeps the test short


def _cfg(tmp_path, **changes) -> LinearEvalConfig:
    base = dict(dataset=SYNTH, data_dir=str(tmp_path / "data"), image_size=16, device="cpu",
                precision="fp32", progress=False, weight_decays=WDS, seed=3)
    return LinearEvalConfig(**{**base, **changes})


class _Spy:
    """Wraps models.load_encoder: keeps the encoder it returned, a copy of its initial state, and
    whether every forward ran with the whole encoder in eval mode."""

    def __init__(self, monkeypatch, replace=None):
        self.real = models.load_encoder
        self.replace = replace
        self.modes: list[bool] = []
        monkeypatch.setattr(models, "load_encoder", self)

    def __call__(self, spec, stem="cifar", width=64):
        self.encoder, self.meta = self.replace() if self.replace else self.real(spec, stem, width)
        self.before = {k: v.clone() for k, v in self.encoder.state_dict().items()}
        self.encoder.register_forward_pre_hook(
            lambda m, i: self.modes.append(not any(x.training for x in m.modules())))
        return self.encoder, self.meta

    def unchanged(self) -> bool:
        now = self.encoder.state_dict()
        return all(torch.equal(now[k].cpu(), v) for k, v in self.before.items())


def test_linear_eval_end_to_end_on_generated_cifar100(tmp_path, monkeypatch):
    spy = _Spy(monkeypatch)
    cfg = _cfg(tmp_path)
    out = tmp_path / "run"
    result = linear_eval(cfg, out)

    for key in ("top1", "top5", "val_top1", "weight_decay", "label_fraction", "n_train", "encoder",
                "encoder_source", "input_size", "wall_time_s"):
        assert key in result, key
    assert result["n_train"] == 300 and result["n_test"] == 100 and result["input_size"] == 16
    assert result["encoder"] == "random" and result["encoder_source"] == "random"
    assert result["encoder_standin"] is False
    assert result["top1"] > 20.0  # random conv features carry the gratings: well above 10% chance
    assert result["top5"] >= result["top1"]
    # frozen: every weight and BN buffer as loaded, and every forward in eval mode
    assert spy.unchanged() and spy.modes and all(spy.modes)

    test = data.load_split(SYNTH, "test", root=cfg.data_dir, image_size=16)
    train = data.load_split(SYNTH, "train", root=cfg.data_dir, image_size=16)
    assert result["mean"] == pytest.approx(list(train.mean))  # random encoder: the dataset's stats
    rows = RunDir(out).read_metrics()
    assert sorted(r["weight_decay"] for r in rows) == sorted(WDS)
    best = max(rows, key=lambda r: (r["val_top1"], r["weight_decay"]))
    assert result["weight_decay"] == best["weight_decay"] and result["val_top1"] == best["val_top1"]
    # 5-fold cross-validation: each fold's fit takes 240 images, and all 300 are validated once
    assert all(r["n_fit"] == 240 and r["n_val"] == 300 and r["folds"] == 5 for r in rows)
    assert (result["n_labelled"], result["n_fit"], result["n_val"], result["val_folds"]) == (300, 240, 300, 5)
    assert result["val_digest"] == result["labelled_digest"]
    assert result["weight_decay_grid"] == sorted(WDS)
    assert result["weight_decay_at_strong_edge"] == (result["weight_decay"] == max(WDS))

    feats = torch.load(out / "features.pt", weights_only=True)
    assert feats["features"].dtype == torch.float16 and feats["features"].shape == (100, 512)
    assert torch.equal(feats["labels"], test.labels)
    assert torch.equal(feats["coarse_labels"], test.coarse_labels)
    assert feats["classes"] == test.classes and feats["coarse_classes"] == test.coarse_classes
    # the saved features are the encoder's (extracted again here, independently)
    ref = extract_features(spy.encoder, test.images, train.mean, train.std, FP32)
    assert torch.allclose(feats["features"].float(), ref, atol=2e-2, rtol=1e-2)
    written = json.loads((out / "config.json").read_text())
    assert written["data"]["train"]["source"] == "generated"
    # per-image test predictions, in test order, that reproduce the recorded accuracies
    preds = predictions.load_predictions(out / result["predictions"], result["test_labels_digest"])
    assert result["predictions"] == "predictions.npz"
    assert preds.labels.tolist() == test.labels.tolist()
    assert result["test_labels_digest"] == predictions.labels_digest(test.labels)
    assert preds.accuracy("top1") == pytest.approx(result["top1"], abs=1e-4)  # result.json: a float32 mean
    assert preds.accuracy("top5") == pytest.approx(result["top5"], abs=1e-4)  # result.json: a float32 mean

    # a finished run is returned as it is, without computing anything
    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(linear_eval_stage, "extract_features", boom)
    assert linear_eval(cfg, out) == result
    with pytest.raises(RunConflict):
        linear_eval(cfg.replace(label_fraction=0.5), out)


def test_cross_validation_pools_every_fold_as_an_independent_fit_does(tmp_path, monkeypatch):
    """Each weight decay's validation accuracy is the fraction of labelled images that the probe
    fitted on the other folds gets right: the same figure as scikit-learn's logistic regression
    fitted fold by fold on the same features and folds (independent of our L-BFGS and warm starts),
    and the choice is the best of them; one held-out split (val_folds=1) validates on its 30."""
    from sklearn.linear_model import LogisticRegression

    spy = _Spy(monkeypatch)
    cfg = _cfg(tmp_path, weight_decays=(1e-3, 1e-1, 3.0))
    result = linear_eval(cfg, tmp_path / "run")
    rows = {r["weight_decay"]: r for r in RunDir(tmp_path / "run").read_metrics()}

    train = data.load_split(SYNTH, "train", root=cfg.data_dir, image_size=16)
    labelled = data.labelled_split(train.labels, cfg.label_fraction, cfg.val_fraction, cfg.label_seed)
    y = train.labels[labelled.labelled].long()
    x = extract_features(spy.encoder, train.images[labelled.labelled], train.mean, train.std, FP32)
    fold = data.stratified_folds(y, 5, cfg.label_seed)
    theirs = {}
    for wd in cfg.weight_decays:
        right = 0
        for k in range(5):
            fit, val = fold != k, fold == k
            mu, sd = x[fit].mean(0), x[fit].std(0, unbiased=False).clamp_min(1e-6)
            clf = LogisticRegression(C=1.0 / (int(fit.sum()) * wd), max_iter=5000, tol=1e-8)
            clf.fit(((x[fit] - mu) / sd).double().numpy(), y[fit].numpy())
            right += int((clf.predict(((x[val] - mu) / sd).double().numpy()) == y[val].numpy()).sum())
        theirs[wd] = 100.0 * right / len(y)
    assert max(theirs.values()) - min(theirs.values()) > 5  # the grid matters on this problem
    for wd, acc in theirs.items():
        assert rows[wd]["val_top1"] == pytest.approx(acc, abs=1.0), wd  # 1 point: 3 of 300 images
    assert theirs[result["weight_decay"]] >= max(theirs.values()) - 1.0
    assert result["val_top1"] == rows[result["weight_decay"]]["val_top1"]

    one = linear_eval(cfg.replace(val_folds=1), tmp_path / "one")
    assert (one["n_fit"], one["n_val"], one["val_folds"]) == (270, 30, 1)
    assert one["val_digest"] == data.index_digest(labelled.val)
    # the same labelled images either way, and the same test images
    assert (one["labelled_digest"], one["n_labelled"]) == (result["labelled_digest"], result["n_labelled"])
    assert one["test_labels_digest"] == result["test_labels_digest"]


def test_linear_eval_uses_the_checkpoints_normalisation_and_size(tmp_path, monkeypatch):
    torch.manual_seed(0)
    enc = models.resnet18_encoder("cifar")
    meta = {"stem": "cifar", "mean": (0.3, 0.3, 0.3), "std": (0.5, 0.4, 0.3), "image_size": 8,
            "source": {"stage": "pretrain", "run": "elsewhere"}}
    RunDir(tmp_path / "pre").save_checkpoint(models.encoder_state(enc, meta), "final")
    cfg = _cfg(tmp_path, encoder=str(tmp_path / "pre"), label_fraction=0.5, image_size=None)
    result = linear_eval(cfg, tmp_path / "lin")
    assert result["input_size"] == 8 and result["mean"] == [0.3, 0.3, 0.3]
    assert result["std"] == [0.5, 0.4, 0.3] and result["encoder_source"] == "pretrain"
    assert result["n_train"] == 150 and result["label_fraction"] == 0.5
    test = data.load_split(SYNTH, "test", root=cfg.data_dir)
    assert test.image_size == 32
    ref = extract_features(enc, test.images, meta["mean"], meta["std"], FP32, size=8)
    got = torch.load(tmp_path / "lin" / "features.pt", weights_only=True)["features"].float()
    assert torch.allclose(got, ref, atol=2e-2, rtol=1e-2)


def test_above_the_datasets_size_the_probe_upsamples_batches_instead_of_caching_big_copies(tmp_path):
    torch.manual_seed(0)
    enc = models.resnet18_encoder("imagenet")
    meta = {"stem": "imagenet", "mean": (0.3, 0.3, 0.3), "std": (0.5, 0.4, 0.3),
            "source": {"stage": "pretrain", "run": "elsewhere"}}  # no size: the config's
    RunDir(tmp_path / "pre").save_checkpoint(models.encoder_state(enc, meta), "final")
    cfg = _cfg(tmp_path, encoder=str(tmp_path / "pre"), label_fraction=0.5, image_size=64)
    result = linear_eval(cfg, tmp_path / "lin")
    assert result["input_size"] == 64
    cached = sorted(p.name for p in (tmp_path / "data").rglob("*px") if p.is_dir())
    assert cached and all(name == "32px" for name in cached)  # read at its own 32 px only
    test = data.load_split(SYNTH, "test", root=cfg.data_dir)
    ref = extract_features(enc, test.images, meta["mean"], meta["std"], FP32, size=64)
    got = torch.load(tmp_path / "lin" / "features.pt", weights_only=True)["features"].float()
    assert torch.allclose(got, ref, atol=2e-2, rtol=1e-2)


class _PixelOracle(nn.Module):
    """Reads the one pixel that codes the class and spreads it over 512 RBF features (then BN)."""

    feature_dim = 512

    def __init__(self):
        super().__init__()
        self.register_buffer("centres", torch.linspace(-3, 3, 512))
        self.bn = nn.BatchNorm1d(512)

    def forward(self, x):
        v = x[:, 0, 0, 0].float().view(-1, 1)
        return self.bn(torch.exp(-((v - self.centres) ** 2) / 0.05))


def _pixel_split(split: str, n_per_class: int) -> data.Split:
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    labels = torch.arange(4).repeat_interleave(n_per_class)
    images = torch.randint(0, 256, (len(labels), 3, 16, 16), dtype=torch.uint8, generator=g)
    images[:, 0, 0, 0] = (labels * 60 + 30).to(torch.uint8)  # the class, in one pixel of noise
    return data.Split(images=images, labels=labels, classes=list("abcd"), name="pixels", split=split,
                      mean=(0.5, 0.5, 0.5), std=(0.29, 0.29, 0.29), provenance={"source": "test"})


def test_separable_features_beat_a_random_encoder(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "load_split", lambda name, split="train", **kw:
                        _pixel_split(split, 40 if split == "train" else 10))
    cfg = _cfg(tmp_path, dataset="pixels", image_size=None)
    random_result = linear_eval(cfg, tmp_path / "random")
    spy = _Spy(monkeypatch, replace=lambda: (_PixelOracle(), {"stem": "cifar", "mean": None, "std": None,
                                                              "image_size": None, "source": "oracle"}))
    oracle_result = linear_eval(cfg.replace(encoder="oracle.pt"), tmp_path / "oracle")
    assert oracle_result["top1"] == 100.0
    assert random_result["top1"] < 70.0  # one informative pixel among 768 noisy ones
    assert spy.unchanged() and all(spy.modes)  # BN buffers untouched: eval mode throughout


def test_linear_eval_refuses_an_encoder_that_changed(tmp_path, monkeypatch):
    real = evaluate.extract_features

    def leaky(encoder, images, *args, **kwargs):
        with torch.no_grad():
            encoder.train()(torch.randn(2, 3, 8, 8))  # a probe "accidentally" in train mode
        return real(encoder, images, *args, **kwargs)

    monkeypatch.setattr(linear_eval_stage, "extract_features", leaky)
    cfg = _cfg(tmp_path, dataset="synthetic-cifar100:classes=4,train=10,test=5", image_size=8)
    with pytest.raises(RuntimeError, match="changed frozen encoder.*running_mean"):
        linear_eval(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "result.json").exists()


def test_linear_eval_fails_fast_on_a_bad_encoder(tmp_path, monkeypatch):
    def no_data(*a, **k):
        raise AssertionError("data loaded before the encoder was checked")

    monkeypatch.setattr(data, "load_split", no_data)
    with pytest.raises(models.WeightsError, match="neither"):
        linear_eval(_cfg(tmp_path, encoder=str(tmp_path / "missing")), tmp_path / "run")


def test_linear_eval_refuses_too_few_labels_before_any_work(tmp_path):
    cfg = _cfg(tmp_path, dataset="synthetic-cifar100:classes=3,train=2,test=2", label_fraction=0.5)
    with pytest.raises(data.DataError, match="raise label_fraction"):
        linear_eval(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_selection_reads_validation_accuracy_only():
    # test accuracy in a row must not steer the choice: the best test row (0.1) loses on val
    rows = [{"encoder_lr_scale": 0.1, "val_top1": 50.0, "top1": 90.0},
            {"encoder_lr_scale": 0.3, "val_top1": 60.0, "top1": 10.0},
            {"encoder_lr_scale": 1.0, "val_top1": 55.0, "top1": 80.0}]
    assert best_on_validation(rows, "encoder_lr_scale")["encoder_lr_scale"] == 0.3
    tie = [{"weight_decay": 1e-3, "val_top1": 7.0}, {"weight_decay": 1e-2, "val_top1": 7.0}]
    assert best_on_validation(tie, "weight_decay")["weight_decay"] == 1e-2  # ties: the larger value
    with pytest.raises(ValueError, match="at least one row"):
        best_on_validation([], "weight_decay")


# ---- saved test predictions -------------------------------------------------------------------
def test_predictions_from_logits_agree_with_topk_accuracy():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(500, 20, generator=g), torch.randint(0, 20, (500,), generator=g)
    preds = predictions.from_logits(logits, labels)
    acc = topk_accuracy(logits, labels)
    assert preds.accuracy("top1") == pytest.approx(acc["top1"]) and preds.accuracy("top5") == pytest.approx(acc["top5"])
    assert preds.top1.tolist() == logits.argmax(1).tolist()
    ranks = (logits > logits.gather(1, labels.view(-1, 1))).sum(1)  # classes scored above the label
    assert preds.top5_hit.tolist() == (ranks < 5).tolist()


def test_saved_predictions_round_trip_and_damage_is_named(tmp_path):
    g = torch.Generator().manual_seed(2)
    logits, labels = torch.randn(64, 10, generator=g), torch.randint(0, 10, (64,), generator=g)
    preds = predictions.from_logits(logits, labels)
    path = tmp_path / predictions.PREDICTIONS
    record = predictions.save_predictions(path, preds)
    assert record == {"predictions": "predictions.npz", "test_labels_digest": predictions.labels_digest(labels)}
    back = predictions.load_predictions(path, record["test_labels_digest"])
    assert (back.top1 == preds.top1).all() and (back.top5_hit == preds.top5_hit).all()
    assert (back.labels == labels.numpy()).all()
    with pytest.raises(predictions.PredictionsError, match="do not match"):
        predictions.load_predictions(path, predictions.labels_digest(labels.flip(0)))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(predictions.PredictionsError, match="cannot read"):
        predictions.load_predictions(path)
    # an object array would need pickle to load: refused, never run
    np.savez(path, top1=np.array([object()]), top5_hit=np.array([True]), labels=np.array([0]),
             digest=np.array("x"))
    with pytest.raises(predictions.PredictionsError, match="cannot read"):
        predictions.load_predictions(path)


def test_the_projection_probe_reads_the_saved_heads_output(tmp_path):
    # probe_layer "projection" probes g(h): the test features are the saved head applied to the
    # saved encoder's output (both in eval mode), 128 wide instead of 512, and neither moved.
    torch.manual_seed(0)
    enc = models.resnet18_encoder("cifar")
    head = models.ProjectionHead(512, 64, 128, batch_norm=True)
    with torch.no_grad():  # BN statistics unlike the defaults, so eval mode matters
        head.net[1].running_mean.uniform_(-1, 1)
        head.net[1].running_var.uniform_(0.5, 2)
    meta = {"stem": "cifar", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "image_size": 8,
            "source": {"stage": "pretrain", "run": "elsewhere"}}
    state = models.encoder_state(enc, meta)
    state["head"] = head.state_dict()
    RunDir(tmp_path / "pre").save_checkpoint(state, "final")
    cfg = _cfg(tmp_path, encoder=str(tmp_path / "pre"), label_fraction=0.5, image_size=None,
               probe_layer="projection")
    result = linear_eval(cfg, tmp_path / "lin")
    assert result["probe_layer"] == "projection" and result["feature_dim"] == 128
    test = data.load_split(SYNTH, "test", root=cfg.data_dir)
    ref = extract_features(nn.Sequential(enc, head), test.images, meta["mean"], meta["std"], FP32, size=8)
    got = torch.load(tmp_path / "lin" / "features.pt", weights_only=True)["features"].float()
    assert got.shape == ref.shape and torch.allclose(got, ref, atol=3e-2, rtol=1e-2)


def test_the_projection_probe_needs_a_saved_head(tmp_path):
    RunDir(tmp_path / "pre").save_checkpoint(models.encoder_state(models.resnet18_encoder("cifar"),
                                                                  {"stem": "cifar"}), "final")
    with pytest.raises(models.WeightsError, match="no projection head.*probe_layer"):
        linear_eval(_cfg(tmp_path, encoder=str(tmp_path / "pre"), probe_layer="projection"), tmp_path / "lin")
    with pytest.raises(ValueError, match="probe_layer.*only a SimCLR checkpoint"):
        LinearEvalConfig(encoder="random", probe_layer="projection")


def test_the_probes_of_one_encoder_extract_the_test_features_once_and_get_what_a_fresh_run_gets(
        tmp_path, monkeypatch):
    # Two label shares of one encoder in one process: the second probe takes the first one's test
    # features, and its figures equal those of the same probe run with nothing kept.
    linear_eval_stage.forget_test_features()
    extracted: list[int] = []
    real = evaluate.extract_features

    def counting(encoder, images, *a, **k):
        extracted.append(len(images))
        return real(encoder, images, *a, **k)

    monkeypatch.setattr(linear_eval_stage, "extract_features", counting)
    quick = dict(image_size=8, weight_decays=(1.0,))  # the extraction is the point, not the probe

    def cfg(**k):
        return _cfg(tmp_path, **quick, **k)

    first = linear_eval(cfg(), tmp_path / "share1")
    second = linear_eval(cfg(label_fraction=0.5), tmp_path / "share05")
    assert extracted == [300, 100, 150]  # train, test; then train only
    assert (first["test_features_reused"], second["test_features_reused"]) == (False, True)
    linear_eval_stage.forget_test_features()
    fresh = linear_eval(cfg(label_fraction=0.5), tmp_path / "fresh")
    assert extracted[3:] == [150, 100] and fresh["test_features_reused"] is False
    for key in ("top1", "top5", "weight_decay", "val_top1", "probe_loss"):
        assert second.get(key) == fresh.get(key), key
    a = np.load(tmp_path / "share05" / second["predictions"])
    b = np.load(tmp_path / "fresh" / fresh["predictions"])
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    # another encoder (a different seed's random weights) gets its own extraction
    linear_eval(cfg(seed=4, label_seed=4, label_fraction=0.5), tmp_path / "other")
    assert extracted[5:] == [150, 100]
    linear_eval_stage.forget_test_features()


def test_the_features_key_follows_every_input_of_the_extraction():
    torch.manual_seed(0)
    enc = models.resnet18_encoder("cifar")
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    args = (images, (0.5,) * 3, (0.25,) * 3, 8, FP32, 512)
    key = linear_eval_stage.features_key(enc, *args)
    assert linear_eval_stage.features_key(enc, *args) == key
    changed = dict(enc.state_dict())
    changed["bn1.running_mean"] = changed["bn1.running_mean"] + 1e-3  # a buffer, not a weight
    other = models.resnet18_encoder("cifar")
    other.load_state_dict(changed)
    assert linear_eval_stage.features_key(other, *args) != key
    flipped = images.clone()
    flipped[0, 0, 0, 0] ^= 1
    assert linear_eval_stage.features_key(enc, flipped, *args[1:]) != key
    assert linear_eval_stage.features_key(enc, images, (0.5,) * 3, (0.25,) * 3, 16, FP32, 512) != key
    assert linear_eval_stage.features_key(enc, images, (0.5,) * 3, (0.25,) * 3, 8, FP32, 64) != key
