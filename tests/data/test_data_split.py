"""Stratified, nested subsets; the seeded train/val split; the Split container."""
import numpy as np
import pytest
import torch

from simpleclr.data import (DataError, Split, index_digest, labelled_split, stratified_folds, stratified_subset,
                            train_val_split)


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


# ---- the one rule for labelled images (supervised, fine-tuning, probe) ----------------------
def cifar_like_labels(seed=0):
    """100 classes of 500 images in a shuffled order: CIFAR-100's training split."""
    return torch.from_numpy(np.random.default_rng(seed).permutation(np.repeat(np.arange(100), 500)))


@pytest.mark.parametrize("fraction, n_labelled, n_val", [(0.01, 500, 100), (0.1, 5000, 500),
                                                         (1.0, 50000, 5000)])
def test_labelled_split_takes_the_budget_first_then_validation_inside_it(fraction, n_labelled, n_val):
    # The counts: the label share of the whole split (500 / 5,000 / 50,000 images), not
    # of what a validation carve left (which gave 400 / 4,500 / 45,000 to the supervised rows).
    labels = cifar_like_labels()
    ls = labelled_split(labels, fraction, 0.1, seed=3)
    assert torch.equal(ls.labelled, stratified_subset(labels, fraction, seed=3))
    fit_pos, val_pos = train_val_split(labels[ls.labelled], 0.1, seed=3)
    assert torch.equal(ls.fit, ls.labelled[fit_pos]) and torch.equal(ls.val, ls.labelled[val_pos])
    assert (len(ls.labelled), len(ls.val), len(ls.fit)) == (n_labelled, n_val, n_labelled - n_val)
    assert torch.equal(torch.cat([ls.fit, ls.val]).sort().values, ls.labelled)
    assert torch.bincount(labels[ls.val], minlength=100).tolist() == [n_val // 100] * 100
    rec = ls.record()
    assert (rec["n_labelled"], rec["n_fit"], rec["n_val"]) == (n_labelled, n_labelled - n_val, n_val)
    assert rec["labelled_digest"] == index_digest(ls.labelled) != index_digest(ls.fit)
    assert rec["val_digest"] == labelled_split(labels, fraction, 0.1, seed=3).record()["val_digest"]
    other_seed = labelled_split(labels, fraction, 0.1, seed=4).record()
    assert other_seed["val_digest"] != rec["val_digest"]
    if fraction < 1.0:  # below 100% another seed also picks other labelled images
        assert other_seed["labelled_digest"] != rec["labelled_digest"]


def test_shares_round_half_up():
    # 9 * 0.5 = 4.5 and 45 * 0.1 = 4.5: np.rint gave 4 for both, a reader expects 5
    labels = torch.from_numpy(np.repeat(np.arange(2), [9, 45]))
    assert torch.bincount(labels[stratified_subset(labels, 0.5, 0)]).tolist() == [5, 23]
    assert torch.bincount(labels[train_val_split(labels, 0.1, 0)[1]]).tolist() == [1, 5]


def test_labelled_split_without_validation_and_with_too_few_images():
    labels = cifar_like_labels(1)
    ls = labelled_split(labels, 0.1, 0.0, seed=0)
    assert torch.equal(ls.fit, ls.labelled) and len(ls.val) == 0 and ls.record()["n_val"] == 0
    with pytest.raises(DataError, match="leave none for validation: raise label_fraction"):
        labelled_split(labels, 0.002, 0.1, seed=0)  # one image per class: nothing to hold out


def test_folds_are_class_balanced_even_and_seeded():
    labels = torch.randperm(503, generator=torch.Generator().manual_seed(4)) % 7  # 71 or 72 a class
    fold = stratified_folds(labels, 5, seed=0)
    assert fold.shape == labels.shape and set(fold.tolist()) == set(range(5))
    sizes = torch.bincount(fold, minlength=5)
    assert int(sizes.max() - sizes.min()) <= 1 and int(sizes.sum()) == 503
    for c in range(7):  # every class spread over the folds as evenly as it can be
        per_fold = torch.bincount(fold[labels == c], minlength=5)
        assert int(per_fold.max() - per_fold.min()) <= 1, c
    assert torch.equal(stratified_folds(labels, 5, seed=0), fold)
    assert not torch.equal(stratified_folds(labels, 5, seed=1), fold)
    # one image a class and fold, as at 1% of CIFAR-100's labels (5 a class): every fold holds each class
    five = torch.arange(20) % 4
    f5 = stratified_folds(five, 5, seed=0)
    assert all(sorted(five[f5 == k].tolist()) == [0, 1, 2, 3] for k in range(5))
    with pytest.raises(DataError, match="4 labelled images cannot make 5 folds"):
        stratified_folds(torch.arange(4), 5, seed=0)
    with pytest.raises(DataError, match="folds is invalid"):
        stratified_folds(labels, 1, seed=0)
