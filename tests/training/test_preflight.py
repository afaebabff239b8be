"""The check a plan makes before its first run: each run's images, chosen from the labels alone,
are the ones the stage chooses, and a run that cannot fit fails with the stage's own message."""
from __future__ import annotations

import json

import pytest
import torch

from simpleclr import data
from simpleclr.config import ConfigError, LinearEvalConfig, PretrainConfig, SupervisedConfig
from simpleclr.training.preflight import check_images, launcher_processes

# 10 classes of 20 images, in a shuffled order
LABELS = torch.randperm(200, generator=torch.Generator().manual_seed(0)) % 10
DATASET = "synthetic-cifar100:classes=10,train=20,test=4,seed=3"


def test_counts_are_the_stages_shares_worked_out_by_hand():
    # pretraining: 0.1 of each class (2) watched by kNN, a quarter of the other 18 (4.5, rounded half up: 5)
    pre = PretrainConfig(dataset=DATASET, subset_fraction=0.25, batch_size=50, epochs=1, warmup_epochs=0)
    assert check_images(pre, LABELS) == {"n_train": 50, "n_val": 20}
    # supervised: a 0.5 share (10 a class), 0.2 of it validates (2 a class)
    sup = SupervisedConfig(dataset=DATASET, subset_fraction=0.5, val_fraction=0.2, batch_size=80, epochs=1,
                           warmup_epochs=0)
    assert check_images(sup, LABELS) == {"n_train": 80, "n_val": 20}
    probe = LinearEvalConfig(dataset=DATASET, label_fraction=0.1, val_fraction=0.5, val_folds=1)
    assert check_images(probe, LABELS) == {"n_train": 10, "n_val": 10}
    # 5-fold cross-validation: all 20 labelled images validate once, and the refit takes them all
    assert check_images(probe.replace(val_folds=5), LABELS) == {"n_train": 20, "n_val": 20}
    with pytest.raises(data.DataError, match="20 labelled images cannot make 21 folds"):
        check_images(probe.replace(val_folds=21), LABELS)


def test_a_batch_larger_than_the_images_fails_with_the_stages_message():
    with pytest.raises(ConfigError, match=r"PretrainConfig.batch_size=64 is larger than the 50 training images"):
        check_images(PretrainConfig(dataset=DATASET, subset_fraction=0.25, batch_size=64, epochs=1,
                                    warmup_epochs=0), LABELS)
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        check_images(SupervisedConfig(dataset=DATASET, batch_size=32, epochs=1, warmup_epochs=0,
                                      launcher="torchrun --nproc-per-node 3"), LABELS)


def test_a_label_share_without_validation_images_fails_before_any_image_is_read():
    with pytest.raises(data.DataError, match="leave none for validation"):
        check_images(LinearEvalConfig(dataset=DATASET, label_fraction=0.05), LABELS)  # one a class


def test_unlabelled_images_cannot_train_a_supervised_run():
    with pytest.raises(ConfigError, match="has unlabelled images"):
        check_images(SupervisedConfig(dataset=DATASET, batch_size=8, epochs=1, warmup_epochs=0),
                     torch.full((40,), -1))


@pytest.mark.parametrize("launcher, n", [(None, 1), ("torchrun --nproc-per-node 4", 4),
                                         ("torchrun --nproc_per_node=2 --standalone", 2), ("mpirun", 1)])
def test_launcher_processes(launcher, n):
    assert launcher_processes(launcher) == n


def test_the_counts_equal_what_a_pretraining_run_records(tmp_path):
    """The independent reference: the stage's own record of the images it trained on."""
    from simpleclr.training.stages.pretrain import pretrain

    cfg = PretrainConfig(dataset=DATASET, data_dir=str(tmp_path / "data"), subset_fraction=0.5, batch_size=40,
                         epochs=1, warmup_epochs=0, image_size=8, width=16, proj_hidden=32, proj_out=16,
                         progress=False, num_threads=1, knn_every=0)
    labels = data.load_labels(DATASET, root=tmp_path / "data")
    assert torch.equal(labels, data.load_split(DATASET, root=tmp_path / "data").labels)  # without the images
    counts = check_images(cfg, labels)
    rec = tmp_path / "run"
    pretrain(cfg, rec)
    record = json.loads((rec / "config.json").read_text())["data"]
    assert (record["n_train"], record["n_val"]) == (counts["n_train"], counts["n_val"]) == (90, 20)
