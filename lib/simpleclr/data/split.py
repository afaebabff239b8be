"""A dataset split held in memory, and the seeded, class-balanced index selections made from it."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .errors import DataError

IndexLike = Union[torch.Tensor, np.ndarray, Sequence[int]]


@dataclass(kw_only=True)
class Split:
    """One split of a dataset: uint8 ``(N, 3, H, W)`` images and int64 labels (-1 = unlabelled).

    ``mean``/``std`` are the per-channel statistics (in [0, 1]) of the dataset's *train* split at
    this image size: the normalisation every consumer uses, so train and test share it.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    split: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    provenance: dict = field(default_factory=dict)
    coarse_labels: Optional[torch.Tensor] = None
    coarse_classes: Optional[list[str]] = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise DataError(f"Split.images must be uint8 (N, 3, H, W), got {self.images.dtype} "
                            f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"Split.labels must have shape ({self.images.shape[0]},), got "
                            f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (f"Split({self.name!r}, {self.split!r}, n={len(self)}, "
                f"size={self.image_size}, classes={self.num_classes})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def labelled(self) -> bool:
        return bool(len(self) == 0 or int(self.labels.min()) >= 0)

    def subset(self, indices: IndexLike) -> "Split":
        """The images and labels at ``indices`` (copied); everything else is shared."""
        idx = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(np.asarray(indices))
        idx = idx.to(device=self.images.device, dtype=torch.long)
        return replace(self, images=self.images[idx], labels=self.labels[idx.to(self.labels.device)],
                       coarse_labels=None if self.coarse_labels is None
                       else self.coarse_labels[idx.to(self.coarse_labels.device)])

    def to(self, device: Union[str, torch.device]) -> "Split":
        """The same split with its tensors on ``device`` (where training runs: no per-batch copies)."""
        return replace(self, images=self.images.to(device), labels=self.labels.to(device),
                       coarse_labels=None if self.coarse_labels is None
                       else self.coarse_labels.to(device))


def _labels_array(labels: IndexLike) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"labels must be one-dimensional, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _rank_within_class(labels: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each sample, its rank among its class when the class is ordered by ``keys``;
    and each sample's class size. (Unlabelled samples, -1, form one group.)"""
    order = np.lexsort((keys, labels))
    sorted_labels = labels[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_labels)) + 1]
    sizes = np.diff(np.r_[starts, len(labels)])
    group = np.repeat(np.arange(len(starts)), sizes)
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - starts[group]
    size = np.empty(len(labels), dtype=np.int64)
    size[order] = sizes[group]
    return rank, size


def _keys(n: int, seed: int, stream: int) -> np.ndarray:
    return np.random.default_rng([int(seed), stream]).random(n)


def _share(size: np.ndarray, fraction: float) -> np.ndarray:
    """``fraction * size`` rounded half up (4.5 -> 5, where ``np.rint`` gives 4): the count a
    reader computes by hand. The 1e-9 absorbs float error in products such as 0.3 * 5."""
    return np.floor(size * float(fraction) + 0.5 + 1e-9).astype(np.int64)


def stratified_subset(labels: IndexLike, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of a class-balanced ``fraction`` of the samples, chosen with ``seed``.

    Every class keeps ``fraction * n_class`` samples, rounded half up (at least one). With one seed the
    subsets are nested: each class is ordered once by a seeded key and a subset is a prefix of that
    order, so the 10% subset lies inside the 25% one.
    """
    if not 0.0 < float(fraction) <= 1.0:
        raise DataError(f"subset fraction {fraction!r} is invalid: use a number in (0, 1]")
    arr = _labels_array(labels)
    if fraction >= 1.0:
        return torch.arange(len(arr), dtype=torch.long)
    rank, size = _rank_within_class(arr, _keys(len(arr), seed, 0))
    keep = np.maximum(1, _share(size, fraction))
    return torch.from_numpy(np.flatnonzero(rank < keep).astype(np.int64))


def train_val_split(labels: IndexLike, val_fraction: float,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint, sorted ``(train_idx, val_idx)``: ``val_fraction * n_class`` of every class, rounded
    half up (at least one, never the whole class), goes to validation, chosen with ``seed``."""
    if not 0.0 < float(val_fraction) < 1.0:
        raise DataError(f"val_fraction {val_fraction!r} is invalid: use a number in (0, 1)")
    arr = _labels_array(labels)
    rank, size = _rank_within_class(arr, _keys(len(arr), seed, 1))
    n_val = np.clip(_share(size, val_fraction), 1, np.maximum(size - 1, 0))
    is_val = rank < n_val
    return (torch.from_numpy(np.flatnonzero(~is_val).astype(np.int64)),
            torch.from_numpy(np.flatnonzero(is_val).astype(np.int64)))


def stratified_folds(labels: IndexLike, k: int, seed: int) -> torch.Tensor:
    """Each sample's fold in ``0..k-1`` for k-fold cross-validation, class-balanced and drawn with
    ``seed``: the samples ordered by class, then by a seeded key within it, are dealt to the folds
    in turn, so every class spreads over the folds as evenly as it can (counts differ by at most
    one) and the folds' sizes differ by at most one. Raises :class:`DataError` below ``k`` samples.
    """
    arr = _labels_array(labels)
    if int(k) < 2:
        raise DataError(f"k={k!r} folds is invalid: use an integer >= 2")
    if len(arr) < k:
        raise DataError(f"{len(arr)} labelled images cannot make {k} folds: raise label_fraction, "
                        "or use fewer folds (val_folds)")
    order = np.lexsort((_keys(len(arr), seed, 2), arr))
    fold = np.empty(len(arr), dtype=np.int64)
    fold[order] = np.arange(len(arr)) % int(k)
    return torch.from_numpy(fold)


@dataclass(frozen=True)
class LabelledSplit:
    """The labelled training images of one stage, as sorted indices into the whole split:
    ``labelled`` (the label budget) and its disjoint parts ``fit`` and ``val``."""

    labelled: torch.Tensor
    fit: torch.Tensor
    val: torch.Tensor
    fraction: float
    val_fraction: float
    seed: int

    def refit(self) -> "LabelledSplit":
        """The same labelled images with nothing held out: what a final fit trains on once a
        choice was made on ``val`` (the linear probe's protocol, SimCLR Appendix B.8)."""
        return replace(self, fit=self.labelled, val=self.labelled[:0])

    def record(self) -> dict:
        """What a run folder records: the counts, and digests that equal the other stages' ones
        exactly when they used the same images."""
        return {"label_fraction": self.fraction, "label_seed": self.seed,
                "val_fraction": self.val_fraction, "n_labelled": int(self.labelled.numel()),
                "n_fit": int(self.fit.numel()), "n_val": int(self.val.numel()),
                "labelled_digest": index_digest(self.labelled), "val_digest": index_digest(self.val)}


def index_digest(indices: torch.Tensor) -> str:
    """A short sha256 of a list of indices (as int64): equal digests, equal images."""
    raw = np.ascontiguousarray(indices.detach().cpu().numpy().astype("<i8")).tobytes()
    return hashlib.sha256(raw).hexdigest()[:16]


def labelled_split(labels: IndexLike, fraction: float, val_fraction: float,
                   seed: int) -> LabelledSplit:
    """The labelled images a stage may use: one rule for supervised training, fine-tuning and the
    linear probe, so that at one label share and seed every row sees the same images.

    First the label budget, a class-balanced ``fraction`` of the split (:func:`stratified_subset`),
    then ``val_fraction`` of each class of it held out for validation (:func:`train_val_split`),
    both drawn with ``seed``. ``val_fraction`` 0 holds nothing out. Raises :class:`DataError` when
    validation is asked for and the budget leaves none (every class has a single image).
    """
    labelled = stratified_subset(labels, fraction, seed)
    if val_fraction == 0:
        fit, val = labelled, labelled[:0]
    else:
        fit_pos, val_pos = train_val_split(_labels_array(labels)[labelled.numpy()], val_fraction, seed)
        fit, val = labelled[fit_pos], labelled[val_pos]
    if val_fraction > 0 and val.numel() == 0:
        raise DataError(f"{labelled.numel()} labelled images (a share of {fraction:g}) leave none for "
                        "validation: raise label_fraction / subset_fraction, or use a dataset with "
                        "more images per class")
    return LabelledSplit(labelled, fit, val, float(fraction), float(val_fraction), int(seed))
