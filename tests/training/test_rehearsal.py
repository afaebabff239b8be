"""A rehearsal (``rehearsal=N``, what ``simpleclr plan rehearse`` sets) runs a stage's real config
cut short: batches and evaluation passes of N images, two epochs of one step, a checkpoint after
the first and a resume from it; its folder never passes for the real run's."""
from __future__ import annotations

import pytest
import torch
from helpers.datasets import TINY

from simpleclr.config import LinearEvalConfig, PretrainConfig, SupervisedConfig
from simpleclr.runs import predictions
from simpleclr.runs.rundir import RunConflict, RunDir
from simpleclr.training import probe
from simpleclr.training.parts import device
from simpleclr.training.stages import linear_eval as linear_eval_stage, pretrain, supervised

CUT = 8


@pytest.fixture
def starts(monkeypatch) -> list[int]:
    """The epoch each training session of a run started from, as it read its last checkpoint
    (0: none, a fresh start; 1: resumed after epoch 1)."""
    seen: list[int] = []
    real = RunDir.load_checkpoint

    def spy(self, name="last", *a, **k):
        out = real(self, name, *a, **k)
        if name == "last":
            seen.append(0 if out is None else int(out["epoch"]))
        return out

    monkeypatch.setattr(RunDir, "load_checkpoint", spy)
    return seen


def _pretrain_cfg(data_dir, **kw) -> PretrainConfig:
    base = dict(dataset=TINY, data_dir=str(data_dir), image_size=8, epochs=4, batch_size=40,
                proj_hidden=64, proj_out=32, warmup_epochs=1, knn_every=1, knn_k=5, checkpoint_every=3,
                progress=False, num_threads=1, width=16)
    return PretrainConfig(**{**base, **kw})


def test_a_pretraining_rehearsal_is_two_cut_steps_with_a_checkpoint_and_a_resume(tmp_path, starts):
    real = _pretrain_cfg(tmp_path / "data")
    cfg = real.replace(rehearsal=CUT)
    assert cfg.fingerprint() == real.fingerprint()  # the very config, cut by a runtime field
    out = tmp_path / "rehearsal"
    result = pretrain.pretrain(cfg, out)
    assert starts == [0, 1]  # stopped after epoch 1 (checkpoint_every 3 notwithstanding), resumed
    assert result["steps"] == 2 and result["epochs"] == 2 and result["images_seen"] == 2 * CUT
    rows = RunDir(out).read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2] and all("knn_top1" in r for r in rows)
    assert result["peak_memory_mb"] > 0
    # the folder holds a rehearsal: the real run refuses it (equal fingerprints notwithstanding)
    assert RunDir(out).status(real.fingerprint()) == "stale"
    assert RunDir(out).status(real.fingerprint(), rehearsal=True) == "done"
    with pytest.raises(RunConflict, match="holds a rehearsal of this config"):
        pretrain.pretrain(real, out)


@pytest.mark.slow
def test_fine_tuning_and_probe_rehearsals_cut_trials_validation_and_test(tmp_path, starts):
    data = tmp_path / "data"
    pre = tmp_path / "pre"
    pretrain.pretrain(_pretrain_cfg(data, rehearsal=CUT), pre)
    starts.clear()
    sup = SupervisedConfig(dataset=TINY, data_dir=str(data), image_size=8, epochs=3, batch_size=32,
                           warmup_epochs=1, init=str(pre), encoder_lr_grid=(1.0, 0.1), trial_epochs=2,
                           progress=False, num_threads=1, rehearsal=CUT, width=16)
    seen: list[int] = []
    real_logits = probe.predict_logits

    def counting(model, images, *a, **k):
        seen.append(len(images))
        return real_logits(model, images, *a, **k)

    probe.predict_logits, restore = counting, probe.predict_logits
    try:
        res = supervised.train_supervised(sup, tmp_path / "tuned")
    finally:
        probe.predict_logits = restore
    # two trials of two steps (never interrupted), then the run itself: stopped and resumed
    assert starts == [0, 0, 0, 1]
    assert [t["epochs"] for t in res["encoder_lr_trials"]] == [2, 2] and res["steps"] == 2
    # 12 validation images cut to 8 each trial epoch (the run refits on all, validating none), 40
    # test images to 8
    assert seen == [CUT] * 5 and res["n_test"] == CUT
    assert predictions.load_predictions(tmp_path / "tuned" / predictions.PREDICTIONS).n == CUT

    probed = linear_eval_stage.linear_eval(LinearEvalConfig(
        dataset=TINY, data_dir=str(data), image_size=8, encoder=str(pre), progress=False, num_threads=1,
        weight_decays=(1e-4, 1e-2), rehearsal=CUT, width=16), tmp_path / "probe")
    assert probed["n_train"] == CUT and probed["n_test"] == CUT
    # the folds deal out the cut's images: each validated once, each fold's fit the other four folds'
    rows = RunDir(tmp_path / "probe").read_metrics()
    assert {(r["n_val"], r["folds"]) for r in rows} == {(CUT, 5)} and {r["n_fit"] for r in rows} == {CUT - 2}


def test_peak_memory_counts_from_the_reset_on_linux():
    if not device.peak_memory()["peak_memory_of"].endswith("(since the run began)"):
        pytest.skip("the per-run peak needs Linux's /proc/self/clear_refs")
    big = torch.ones(64 * 2**20, dtype=torch.float32)  # 256 MiB, touched
    before = device.peak_memory()["peak_memory_mb"]
    del big
    device.reset_peak_memory()
    after = device.peak_memory()["peak_memory_mb"]
    assert after < before - 200
