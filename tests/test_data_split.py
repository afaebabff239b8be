"""Stratified, nested subsets; the seeded train/val split; the Split container."""
import numpy as np
import pytest
import torch

from simpleclr.data import DataError, Split, stratified_subset, train_val_split


def imbalanced_labels(seed=0):
    rng = np.random.default_rng(seed)
    counts = [500, 120, 37, 10, 3]
    return torch.from_numpy(rng.permutation(np.repeat(np.arange(5), counts))), counts


def test_subset_is_class_balanced_sorted_and_seeded():
    labels, counts = imbalanced_labels()
    idx = stratified_subset(labels, 0.1, seed=3)
    assert idx.dtype == torch.long and torch.equal(idx, idx.sort().values)
    assert len(set(idx.tolist())) == len(idx)
    per_class = torch.bincount(labels[idx], minlength=5).tolist()
    assert per_class == [max(1, round(0.1 * n)) for n in counts] == [50, 12, 4, 1, 1]
    assert torch.equal(idx, stratified_subset(labels.numpy(), 0.1, seed=3))  # numpy in, same out
    assert not torch.equal(idx, stratified_subset(labels, 0.1, seed=4))


def test_subsets_are_nested_for_one_seed():
    labels, _ = imbalanced_labels(1)
    fractions = [0.01, 0.1, 0.25, 0.5, 1.0]
    subsets = [set(stratified_subset(labels, f, seed=7).tolist()) for f in fractions]
    for small, big in zip(subsets, subsets[1:]):
        assert small < big
    assert subsets[-1] == set(range(len(labels)))


def test_unlabelled_samples_form_one_group():
    labels = torch.full((1000,), -1, dtype=torch.long)
    assert len(stratified_subset(labels, 0.25, seed=0)) == 250


def test_train_val_split_is_disjoint_stratified_and_seeded():
    labels, counts = imbalanced_labels(2)
    tr, va = train_val_split(labels, 0.1, seed=5)
    assert len(tr) + len(va) == len(labels)
    assert not set(tr.tolist()) & set(va.tolist())
    assert torch.bincount(labels[va], minlength=5).tolist() == [50, 12, 4, 1, 1]
    # every class keeps at least one training sample even when tiny
    assert torch.bincount(labels[tr], minlength=5).min() >= 1
    tr2, va2 = train_val_split(labels, 0.1, seed=5)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    assert not torch.equal(va, train_val_split(labels, 0.1, seed=6)[1])


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_bad_fractions_are_refused(fraction):
    with pytest.raises(DataError, match="fraction"):
        stratified_subset(torch.zeros(10, dtype=torch.long), fraction, 0)
    with pytest.raises(DataError, match="val_fraction"):
        train_val_split(torch.zeros(10, dtype=torch.long), fraction if fraction else 1.0, 0)


def make_split(n=6):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return Split(images=images, labels=torch.arange(n) % 3, classes=["a", "b", "c"], name="toy",
                 split="train", mean=(0.5,) * 3, std=(0.25,) * 3, provenance={"source": "generated"},
                 coarse_labels=torch.arange(n) % 2, coarse_classes=["x", "y"])


def test_split_subset_keeps_images_labels_and_coarse_aligned():
    s = make_split()
    sub = s.subset(torch.tensor([4, 1]))
    assert len(sub) == 2 and sub.num_classes == 3 and sub.image_size == 4
    assert sub.images[:, 0, 0, 0].tolist() == [4, 1]
    assert sub.labels.tolist() == [1, 1] and sub.coarse_labels.tolist() == [0, 1]
    assert sub.mean == s.mean and sub.classes == s.classes and len(s) == 6
    assert s.subset(np.array([0])).labels.tolist() == [0]
    moved = s.to("cpu")
    assert moved.images.device.type == "cpu" and moved.labelled


def test_split_rejects_wrong_image_layout():
    with pytest.raises(DataError, match="uint8"):
        Split(images=torch.zeros(2, 4, 4, 3), labels=torch.zeros(2, dtype=torch.long), classes=[],
              name="x", split="train", mean=(0,) * 3, std=(1,) * 3)
