"""A length series' pretraining run keeps its encoder after chosen epochs (``keep_epochs``), as
checkpoints a probe reads like any other, each naming its epoch; a rehearsal, which never reaches
them, keeps every one at its end so that the series' probes run."""
from __future__ import annotations

import pytest
import torch
from helpers.datasets import TINY

from simpleclr.config import ConfigError, LinearEvalConfig, PretrainConfig
from simpleclr.training.parts import models
from simpleclr.training.stages import linear_eval as linear_eval_stage, pretrain


def _cfg(data_dir, **kw) -> PretrainConfig:
    base = dict(dataset=TINY, data_dir=str(data_dir), image_size=8, epochs=3, batch_size=40,
                proj_hidden=64, proj_out=32, warmup_epochs=1, knn_every=0, progress=False,
                num_threads=1, width=16, keep_epochs=[1, 3])
    return PretrainConfig(**{**base, **kw})


def test_kept_epochs_are_checkpoints_a_probe_reads_naming_their_epoch(tmp_path):
    out = tmp_path / "long"
    pretrain.pretrain(_cfg(tmp_path / "data"), out)
    ckpts = out / "checkpoints"
    assert (ckpts / "epoch1.pt").is_file() and (ckpts / "epoch3.pt").is_file()
    assert not (ckpts / "epoch2.pt").exists()
    first, meta1 = models.load_encoder(str(ckpts / "epoch1.pt"), width=16)
    final, meta3 = models.load_encoder(str(ckpts / "epoch3.pt"), width=16)
    assert (meta1["epoch"], meta3["epoch"]) == (1, 3)
    # the last kept epoch is the final encoder; the first differs from it (two more epochs trained)
    done, _ = models.load_encoder(str(out), width=16)
    assert all(torch.equal(a, b) for a, b in zip(final.state_dict().values(), done.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), done.state_dict().values()))
    probe = linear_eval_stage.linear_eval(LinearEvalConfig(dataset=TINY, data_dir=str(tmp_path / "data"), width=16,
                                                  encoder=str(ckpts / "epoch1.pt"), weight_decays=[1e-3],
                                                  val_folds=2, progress=False, num_threads=1),
                                 tmp_path / "probe")
    assert probe["encoder_meta"]["epoch"] == 1


def test_a_rehearsal_keeps_every_epoch_at_its_end(tmp_path):
    out = tmp_path / "cut"
    pretrain.pretrain(_cfg(tmp_path / "data", epochs=1000, keep_epochs=[100, 1000], rehearsal=8), out)
    assert {p.name for p in (out / "checkpoints").glob("epoch*.pt")} == {"epoch100.pt", "epoch1000.pt"}


def test_kept_epochs_outside_the_run_are_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"keep_epochs=.* use whole epochs in \[1, epochs=3\]"):
        _cfg(tmp_path, keep_epochs=[4])
    with pytest.raises(ConfigError, match="keep_epochs"):
        _cfg(tmp_path, keep_epochs=[1.5])
    assert _cfg(tmp_path, keep_epochs=[]).fingerprint() == _cfg(tmp_path, keep_epochs=[]).replace().fingerprint()
