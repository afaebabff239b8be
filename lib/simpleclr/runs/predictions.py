"""A run's per-image test predictions: what a paired comparison of two runs needs.

Two rows tested on the same images differ by far less noise than two independent accuracies
suggest, because most images are right (or wrong) for both; a paired test needs, per test image,
whether each run got it right. ``predictions.npz`` holds, in test-split order: the predicted class
(``top1``), whether the label is among the five highest scores (``top5_hit``) and the labels, plus
the labels' digest, so two runs can be checked to share their test images before they are paired.
Plain arrays only: it is read with ``numpy.load(allow_pickle=False)``, so no file can run code.
"""
from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import SimpleCLRError, one_line
from .rundir import atomic_write_bytes

PREDICTIONS = "predictions.npz"  # beside result.json in a run folder


class PredictionsError(SimpleCLRError, ValueError):
    """A predictions file that cannot be read or does not match its run; one line naming it."""


def labels_digest(labels: Any) -> str:
    """sha256 of the test labels as little-endian int64, in test-split order: equal digests mean
    the same labels in the same order (a cheap check that two runs saw the same test images)."""
    arr = np.ascontiguousarray(np.asarray(labels).astype("<i8").ravel())
    return hashlib.sha256(arr.tobytes()).hexdigest()


@dataclass(frozen=True)
class Predictions:
    """One run's test predictions: predicted class, top-5 hit and label per test image."""

    top1: np.ndarray      # int, (n,)
    top5_hit: np.ndarray  # bool, (n,)
    labels: np.ndarray    # int, (n,)

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def digest(self) -> str:
        return labels_digest(self.labels)

    def correct(self, key: str = "top1") -> np.ndarray:
        """Per image, whether the run got it right at ``key`` ("top1" or "top5")."""
        if key == "top1":
            return self.top1 == self.labels
        if key == "top5":
            return self.top5_hit.astype(bool)
        raise ValueError(f"key={key!r}: use 'top1' or 'top5'")

    def accuracy(self, key: str = "top1") -> float:
        """Accuracy in percent, as result.json gives it."""
        return 100.0 * float(self.correct(key).mean())


def from_logits(logits: Any, labels: Any) -> Predictions:
    """The predictions of ``(n, classes)`` scores (a torch tensor or array) for ``n`` labels."""
    scores = np.asarray(logits.detach().float().cpu() if hasattr(logits, "detach") else logits)
    y = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(np.int64).ravel()
    if scores.ndim != 2 or scores.shape[0] != y.shape[0] or y.shape[0] == 0:
        raise ValueError(f"predictions need scores (n, classes) for n > 0 labels, got "
                         f"{scores.shape} and {y.shape}")
    k = min(5, scores.shape[1])
    top5 = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return Predictions(top1=scores.argmax(1).astype(np.int64),
                       top5_hit=(top5 == y[:, None]).any(1), labels=y)


def save_predictions(path: Union[str, Path], preds: Predictions) -> dict:
    """Write ``preds`` atomically to ``path``; return what result.json records about them."""
    buf = io.BytesIO()
    np.savez_compressed(buf, top1=preds.top1.astype(np.int16 if preds.top1.max() < 2**15 else np.int64),
                        top5_hit=preds.top5_hit.astype(bool),
                        labels=preds.labels.astype(np.int16 if preds.labels.max() < 2**15 else np.int64),
                        digest=np.array(preds.digest))
    atomic_write_bytes(path, buf.getvalue())
    return {"predictions": Path(path).name, "test_labels_digest": preds.digest}


# The arrays a predictions file holds, and the dtypes each may have.
_ARRAYS = {"top1": "iu", "top5_hit": "b", "labels": "iu", "digest": "U"}
MAX_IMAGES = 10_000_000  # more test images than any dataset here has; caps an unchecked file
MAX_CLASSES = 100_000  # more classes than any dataset here has (ImageNet-21k: 21,841)
_DIGEST_BYTES = 4 * 64 + 256  # a 64-character str array and its npy header


def _read_array(z: zipfile.ZipFile, key: str, n: Optional[int], path: Any) -> np.ndarray:
    """Array ``key`` of an opened predictions file, its declared shape, dtype and size checked
    before anything is allocated, and at most its declared bytes decompressed."""
    def broken(why: str) -> PredictionsError:
        return PredictionsError(f"cannot read {path}: {key} {why}; delete it and run again to "
                                "write it anew")

    try:
        info = z.getinfo(f"{key}.npy")
    except KeyError:
        raise broken("is missing") from None
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0(f))
        if dtype.kind not in _ARRAYS[key] or dtype.hasobject or dtype.itemsize > 8 and key != "digest":
            raise broken(f"has dtype {dtype}, not {_ARRAYS[key]!r}")
        want = () if key == "digest" else (n,) if n is not None else None
        if want is not None and tuple(shape) != want:
            raise broken(f"has shape {shape}, not the run's {want}")
        if key != "digest" and (len(shape) != 1 or not 0 < shape[0] <= MAX_IMAGES):
            raise broken(f"has shape {shape}, not one value per test image")
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = count * dtype.itemsize
        if key == "digest" and nbytes > _DIGEST_BYTES:
            raise broken("is not a digest")
        data = f.read(nbytes + 1)  # decompresses at most this much, whatever the file declares
    if len(data) != nbytes:
        raise broken(f"holds {len(data):,} bytes where its header declares {nbytes:,}")
    arr = np.frombuffer(data, dtype=dtype)
    return arr.reshape(shape, order="F" if fortran else "C")


def load_predictions(path: Union[str, Path], digest: Optional[str] = None, n: Optional[int] = None,
                     classes: Optional[int] = None) -> Predictions:
    """The predictions in ``path``, checked for consistency (and against ``digest``, the test
    labels' digest result.json recorded, ``n`` its number of test images and ``classes`` its
    number of classes, when given); anything wrong is a :class:`PredictionsError`. No array is
    allocated before its declared shape and dtype pass, and none decompresses past its
    declared size, so a forged header or a deflate bomb costs nothing."""
    try:
        with zipfile.ZipFile(path) as z:
            top1, top5, labels = (_read_array(z, k, n, path) for k in ("top1", "top5_hit", "labels"))
            stored = str(_read_array(z, "digest", None, path))
    except PredictionsError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged archive fails in zipfile, zlib or numpy
        raise PredictionsError(f"cannot read {path}: {type(e).__name__}: {one_line(str(e), 120)}; "
                               "delete it and run again to write it anew") from None
    if not (top1.shape == top5.shape == labels.shape and labels.ndim == 1 and labels.size):
        raise PredictionsError(f"{path}: arrays of unequal or empty shape {top1.shape}, {top5.shape}, "
                               f"{labels.shape}")
    preds = Predictions(top1.astype(np.int64), top5.astype(bool), labels.astype(np.int64))
    for name, arr in (("labels", preds.labels), ("top1", preds.top1)):
        high = classes if classes is not None else MAX_CLASSES
        if arr.min() < 0 or arr.max() >= high:
            raise PredictionsError(f"{path}: {name} holds {int(arr.min())}..{int(arr.max())}, outside "
                                   f"the run's classes 0..{high - 1}; delete it and run again")
    if preds.digest != stored or (digest is not None and digest != stored):
        raise PredictionsError(f"{path}: its test labels do not match the digest recorded for them "
                               "(a damaged or foreign file)")
    return preds
