"""Writers of on-disk dataset formats that the library only reads: test fixtures.

The library writes a format only where a stand-in needs it (``simpleclr.data.synthetic`` writes
CIFAR-100 and Tiny ImageNet archives); CIFAR-10 and STL-10 are written here, for the loader tests,
with nothing but tarfile, pickle and numpy, so a reader is checked against an independent writer.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Sequence

import numpy as np

CIFAR10_FOLDER = "cifar-10-batches-py"


def _flat(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, 3, 32, 32)`` -> the CIFAR pickles' ``(N, 3072)`` rows (channel planes in order)."""
    images = np.asarray(images, dtype=np.uint8)
    assert images.ndim == 4 and images.shape[1:] == (3, 32, 32), images.shape
    return np.ascontiguousarray(images.reshape(len(images), 3072))


def _add_pickle(tar: tarfile.TarFile, name: str, obj: dict) -> None:
    data = pickle.dumps(obj, protocol=4)
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_cifar10_archive(path: Path, train: tuple[np.ndarray, np.ndarray],
                          test: tuple[np.ndarray, np.ndarray], names: Sequence[str]) -> Path:
    """Write ``cifar-10-python.tar.gz`` in the official layout (train spread over five batches)."""
    path = Path(path)
    images, labels = train
    chunks = np.array_split(np.arange(len(images)), 5)
    with tarfile.open(path, "w:gz") as tar:
        _add_pickle(tar, f"{CIFAR10_FOLDER}/batches.meta", {"label_names": list(names),
                                                            "num_cases_per_batch": len(chunks[0]),
                                                            "num_vis": 3072})
        parts = [(f"data_batch_{i + 1}", images[c], labels[c]) for i, c in enumerate(chunks)]
        for name, imgs, labs in parts + [("test_batch", test[0], test[1])]:
            _add_pickle(tar, f"{CIFAR10_FOLDER}/{name}", {
                "batch_label": name, "data": _flat(imgs), "labels": [int(v) for v in labs],
                "filenames": [f"{name}_{i:05d}.png" for i in range(len(imgs))]})
    return path


def write_stl10_folder(folder: Path, train: tuple[np.ndarray, np.ndarray],
                       test: tuple[np.ndarray, np.ndarray], unlabeled: np.ndarray,
                       names: Sequence[str]) -> Path:
    """Write the binary files of ``stl10_binary/`` from uint8 ``(N, 3, 96, 96)`` images and 0-based
    labels (stored 1-based, column-major, as in the release)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def put(name: str, images: np.ndarray) -> None:
        np.ascontiguousarray(np.asarray(images, np.uint8).transpose(0, 1, 3, 2)).tofile(folder / name)

    for split, (images, labels) in (("train", train), ("test", test)):
        put(f"{split}_X.bin", images)
        (np.asarray(labels) + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    put("unlabeled_X.bin", unlabeled)
    (folder / "class_names.txt").write_text("".join(f"{n}\n" for n in names))
    (folder / "fold_indices.txt").write_text(" ".join(map(str, range(len(train[0])))) + "\n")
    return folder
