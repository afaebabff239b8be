"""CIFAR-10/100 in the official python-pickle layout: read an extracted folder; write a CIFAR-100
archive (what the generated stand-in ``synthetic-cifar100`` is packed as).

The pickles are read with a restricted unpickler that only builds numpy arrays and plain Python
values, so a tampered archive cannot run code when it is loaded.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import pickle
import tarfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from .errors import DataError
from .raw import RawDataset, RawSplit

CIFAR100_FOLDER = "cifar-100-python"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FILES = ("train", "test", "meta")
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as e:
        raise DataError(f"cannot read CIFAR pickle {path} ({e}): delete the folder "
                        f"{path.parent} and its archive, then prepare the dataset again") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR pickle (holds {type(obj).__name__}): delete "
                        f"{path.parent} and prepare the dataset again")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _names(values: Sequence[Any]) -> list[str]:
    return [v.decode("latin1") if isinstance(v, bytes) else str(v) for v in values]


def _images(batch: dict, path: Path) -> np.ndarray:
    data = np.asarray(batch["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' has shape {data.shape}, expected (N, 3072)")
    return data.reshape(-1, 3, 32, 32)


def _key(batch: dict, key: str, path: Path) -> Any:
    if key not in batch:
        raise DataError(f"{path} lacks the key {key!r} of the CIFAR format: delete {path.parent} "
                        "and its archive, then prepare the dataset again")
    return batch[key]


def read_cifar100(folder: Path) -> RawDataset:
    """Read an extracted ``cifar-100-python/`` folder (train, test, meta pickles)."""
    folder = Path(folder)
    meta = _load_pickle(folder / "meta")
    splits = {}
    for split in ("train", "test"):
        path = folder / split
        batch = _load_pickle(path)
        images = _images(batch, path)
        fine = np.asarray(_key(batch, "fine_labels", path), dtype=np.int64)
        coarse = np.asarray(_key(batch, "coarse_labels", path), dtype=np.int64)
        if not len(fine) == len(coarse) == len(images):
            raise DataError(f"{path}: {len(images)} images but {len(fine)} fine and {len(coarse)} "
                            "coarse labels")
        splits[split] = RawSplit(images, fine, coarse)
    return RawDataset(splits, _names(_key(meta, "fine_label_names", folder / "meta")),
                      _names(_key(meta, "coarse_label_names", folder / "meta")))


def read_cifar10(folder: Path) -> RawDataset:
    """Read an extracted ``cifar-10-batches-py/`` folder (five data batches, test batch, meta)."""
    folder = Path(folder)
    meta = _load_pickle(folder / "batches.meta")

    def part(names: Sequence[str]) -> RawSplit:
        images, labels = [], []
        for name in names:
            batch = _load_pickle(folder / name)
            images.append(_images(batch, folder / name))
            labels.append(np.asarray(_key(batch, "labels", folder / name), dtype=np.int64))
        return RawSplit(np.concatenate(images), np.concatenate(labels))

    return RawDataset({"train": part(CIFAR10_FILES[:5]), "test": part(["test_batch"])},
                      _names(_key(meta, "label_names", folder / "batches.meta")))


# ---- writing (the generated stand-in's archive: data/synthetic.py) -------------------------------
def _add(tar: tarfile.TarFile, name: str, obj: dict) -> None:
    data = pickle.dumps(obj, protocol=4)
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


@contextlib.contextmanager
def _targz(path: Path) -> Iterator[tarfile.TarFile]:
    """A gzipped tar with a fixed gzip time stamp: the same contents give the same bytes."""
    with open(path, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        yield tar


def _flat(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[1:] != (3, 32, 32):
        raise DataError(f"CIFAR images must be uint8 (N, 3, 32, 32), got {images.shape}")
    return np.ascontiguousarray(images.reshape(len(images), 3072))


def write_cifar100_archive(path: Path, train: tuple[np.ndarray, np.ndarray, np.ndarray],
                           test: tuple[np.ndarray, np.ndarray, np.ndarray],
                           fine_names: Sequence[str], coarse_names: Sequence[str]) -> Path:
    """Write ``cifar-100-python.tar.gz`` in the official layout and pickle keys.

    ``train``/``test`` are ``(images (N, 3, 32, 32) uint8, fine_labels, coarse_labels)``.
    """
    path = Path(path)
    with _targz(path) as tar:
        _add(tar, f"{CIFAR100_FOLDER}/meta", {"fine_label_names": list(fine_names),
                                              "coarse_label_names": list(coarse_names)})
        for split, (images, fine, coarse) in (("train", train), ("test", test)):
            _add(tar, f"{CIFAR100_FOLDER}/{split}", {
                "filenames": [f"{split}_{i:06d}.png" for i in range(len(images))],
                "batch_label": f"{split}ing batch 1 of 1", "data": _flat(images),
                "fine_labels": [int(v) for v in fine], "coarse_labels": [int(v) for v in coarse]})
    return path


def check_folder(folder: Path, files: Sequence[str]) -> Optional[str]:
    """None when ``folder`` holds every file in ``files``; else the first one missing."""
    for name in files:
        if not (Path(folder) / name).is_file():
            return name
    return None
