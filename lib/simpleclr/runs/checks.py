"""A finished run's data files, checked against what the run itself says before anything uses them.

A run folder may be damaged, hand-edited or forged: a 3 kB ``features.pt`` can hold a tensor
"expanded" to 128 GB (one element and zero strides), an 841-byte ``predictions.npz`` can declare
an array of 37 GiB. So the files the report reads are checked first against the run's own
``result.json`` (test images ``n_test``, feature width ``feature_dim``, classes ``num_classes``):
shapes, dtypes, value ranges, finiteness, and tensors that own contiguous storage of exactly their
size. A file that fails is a :class:`~simpleclr.runs.rundir.BrokenRun` whose one line says why;
the report then leaves that run out and names it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..errors import one_line
from ..types import PathLike
from .predictions import PredictionsError, load_predictions
from .rundir import BrokenRun, RunDir, TorchFileError, load_torch_file

REWRITE = "delete it and run the run again to write it anew"
_INT_DTYPES = ("torch.int64", "torch.int32", "torch.int16", "torch.uint8", "torch.int8")
_FLOAT_DTYPES = ("torch.float16", "torch.bfloat16", "torch.float32", "torch.float64")


def _expected(result: Optional[dict], key: str) -> Optional[int]:
    """``result[key]`` when it is a positive integer (older results lack some keys)."""
    value = (result or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def check_tensor(t: Any, what: str, path: PathLike, shape: tuple, dtypes: tuple[str, ...]) -> None:
    """``t`` must be a tensor of one of ``dtypes`` and ``shape`` (None: any size on that axis)
    that owns contiguous storage of exactly its size: no zero strides making a few bytes look
    like gigabytes, no view into a larger storage."""
    import torch

    def broken(why: str) -> BrokenRun:
        return BrokenRun(f"{path}: {what} {why}: {REWRITE}")

    if not isinstance(t, torch.Tensor):
        raise broken(f"is a {type(t).__name__}, not a tensor")
    if str(t.dtype) not in dtypes:
        raise broken(f"has dtype {t.dtype}, not one of {', '.join(d[6:] for d in dtypes)}")
    if t.dim() != len(shape) or any(w is not None and s != w for s, w in zip(t.shape, shape)):
        want = tuple("any" if w is None else w for w in shape)
        raise broken(f"has shape {one_line(str(tuple(t.shape)), 60)}, not the run's {want}")
    if t.layout != torch.strided or not t.is_contiguous() or t.storage_offset() != 0 or \
            t.untyped_storage().nbytes() != t.numel() * t.element_size():
        raise broken(f"is not a plain tensor of its size (strides {one_line(str(t.stride()), 40)} over "
                     f"{t.untyped_storage().nbytes():,} stored bytes)")


def _check_labels(t: Any, what: str, path: PathLike, n: Optional[int], classes: Optional[int]) -> None:
    check_tensor(t, what, path, (n,), _INT_DTYPES)
    if t.numel() and (int(t.min()) < 0 or (classes is not None and int(t.max()) >= classes)):
        raise BrokenRun(f"{path}: {what} hold {int(t.min())}..{int(t.max())}, outside the classes "
                        f"0..{(classes or 1) - 1}: {REWRITE}")


def _check_names(names: Any, what: str, path: PathLike, count: Optional[int]) -> int:
    if not isinstance(names, (list, tuple)) or not all(isinstance(c, str) for c in names):
        raise BrokenRun(f"{path}: {what} is not a list of class names: {REWRITE}")
    if count is not None and len(names) != count:
        raise BrokenRun(f"{path}: {what} names {len(names)} classes, the run has {count}: {REWRITE}")
    return len(names)


def read_features(path: PathLike, result: Optional[dict] = None) -> dict:
    """A linear probe's ``features.pt`` (test features, labels, class names and, for CIFAR-100,
    superclasses), checked against its ``result.json``: ``n_test`` rows of ``feature_dim``
    finite features, labels within ``num_classes``. Anything else is a :class:`BrokenRun`."""
    import torch

    path = Path(path)
    try:
        feats = load_torch_file(path, require_zip=True)
    except TorchFileError as e:
        raise BrokenRun(f"{e}: {REWRITE}") from None
    if not isinstance(feats, dict) or not {"features", "labels", "classes"} <= set(feats):
        raise BrokenRun(f"{path} does not hold features, labels and classes: {REWRITE}")
    n, width = _expected(result, "n_test"), _expected(result, "feature_dim")
    classes = _check_names(feats["classes"], "classes", path, _expected(result, "num_classes"))
    check_tensor(feats["features"], "features", path, (n, width), _FLOAT_DTYPES)
    n = feats["features"].shape[0]
    _check_labels(feats["labels"], "labels", path, n, classes)
    if feats.get("coarse_labels") is not None:
        coarse = _check_names(feats.get("coarse_classes"), "coarse_classes", path, None)
        _check_labels(feats["coarse_labels"], "coarse_labels", path, n, coarse)
    if not bool(torch.isfinite(feats["features"]).all()):
        raise BrokenRun(f"{path}: features hold NaN or infinite values: {REWRITE}")
    return feats


# metrics.jsonl keys whose values the report plots or tabulates: numbers (or null) only
NUMERIC_METRICS = ("epoch", "step", "loss", "lr", "grad_norm", "seconds", "images_per_s", "knn_top1",
                   "val_top1", "val_top5", "weight_decay", "iterations", "n_fit", "n_val", "folds")


def check_metrics(run: RunDir) -> list[dict]:
    """The run's metrics rows, each of :data:`NUMERIC_METRICS` a number or null; a row that holds
    anything else there (a hand edit, another program's file) is a :class:`BrokenRun`."""
    rows = run.read_metrics()
    for i, row in enumerate(rows, 1):
        for key in NUMERIC_METRICS:
            value = row.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise BrokenRun(f"{run.metrics_path}: row {i} has {key}={one_line(repr(value), 40)}, "
                                f"not a number: {REWRITE}")
    return rows


def check_run_files(run: RunDir, result: dict) -> None:
    """Check a finished run's predictions and features against its ``result``; a file that fails
    is a :class:`BrokenRun` (one line). Files the run does not have are not asked for."""
    name = result.get("predictions")
    if name:
        path = run.path / str(name)
        if Path(str(name)).name != str(name):
            raise BrokenRun(f"{run.result_path}: predictions names {one_line(str(name), 60)}, not a "
                            f"file of the run folder: {REWRITE}")
        if path.exists():
            try:
                load_predictions(path, result.get("test_labels_digest"),
                                 _expected(result, "n_test"), _expected(result, "num_classes"))
            except PredictionsError as e:
                raise BrokenRun(str(e)) from None
    if run.features_path.exists():
        read_features(run.features_path, result)
