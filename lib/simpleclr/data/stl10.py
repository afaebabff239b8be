"""STL-10 in its official binary layout (``stl10_binary/``): read an extracted folder.

Each ``*_X.bin`` holds uint8 images stored column-major per channel, i.e. ``(N, 3, W, H)``;
``*_y.bin`` holds labels 1..10. ``unlabeled`` (100,000 images) has no labels (served as -1).
Images are opened as memory maps, so the 2.7 GB unlabeled split is never read whole into memory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError
from .raw import RawDataset, RawSplit

STL_FOLDER = "stl10_binary"
STL_SIZE = 96
STL_FILES = ("class_names.txt", "train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin",
             "unlabeled_X.bin")


def _images(path: Path) -> np.ndarray:
    n_bytes = path.stat().st_size
    per = 3 * STL_SIZE * STL_SIZE
    if n_bytes == 0 or n_bytes % per:
        raise DataError(f"{path} has {n_bytes} bytes, not a multiple of {per} (one 96x96 RGB "
                        "image): the file is truncated; delete the folder and prepare again")
    return np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, 3, STL_SIZE, STL_SIZE) \
        .transpose(0, 1, 3, 2)


def _labels(path: Path, n: int) -> np.ndarray:
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != n or (n and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"{path}: expected {n} labels in 1..10, found {len(labels)} "
                        f"(range {labels.min(initial=0) + 1}..{labels.max(initial=0) + 1})")
    return labels


def read_stl10(folder: Path) -> RawDataset:
    """Read an extracted ``stl10_binary/`` folder: train (5,000), test (8,000), unlabeled."""
    folder = Path(folder)
    splits = {}
    for split in ("train", "test"):
        images = _images(folder / f"{split}_X.bin")
        splits[split] = RawSplit(images, _labels(folder / f"{split}_y.bin", len(images)))
    unlabeled = _images(folder / "unlabeled_X.bin")
    splits["unlabeled"] = RawSplit(unlabeled, np.full(len(unlabeled), -1, dtype=np.int64))
    names = [ln.strip() for ln in (folder / "class_names.txt").read_text().splitlines() if ln.strip()]
    return RawDataset(splits, names)
