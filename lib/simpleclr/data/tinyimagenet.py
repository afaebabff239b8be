"""Tiny ImageNet-200 in its official layout: read an extracted folder, write a zip.

Layout: ``tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG,
val/images/*.JPEG, val/val_annotations.txt, test/images/*.JPEG}``. The val images sit in one
folder; their labels come from ``val_annotations.txt`` and they are re-sorted by class here. The
test images carry no labels and are not offered.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np
from PIL import Image

from .errors import DataError
from .images import decode_images
from .raw import RawDataset, RawSplit

TINY_FOLDER = "tiny-imagenet-200"
TINY_SIZE = 64
TINY_FILES = ("wnids.txt", "words.txt", "val/val_annotations.txt")


def _lines(path: Path) -> list[str]:
    try:
        return [ln.rstrip("\r\n") for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as e:
        raise DataError(f"cannot read {path} ({e}): delete {path.parent} and its archive, then "
                        "prepare the dataset again") from e


def class_names(wnids: Sequence[str], words: Mapping[str, str]) -> list[str]:
    """A short readable name per wnid (the first synonym), made unique with the wnid if needed."""
    first = [words.get(w, w).split(",")[0].strip() or w for w in wnids]
    counts = {n: first.count(n) for n in first}
    return [n if counts[n] == 1 else f"{n} ({w})" for n, w in zip(first, wnids)]


def read_tiny_imagenet(folder: Path) -> RawDataset:
    """Read an extracted ``tiny-imagenet-200/`` folder: labelled train and val (grey -> RGB)."""
    folder = Path(folder)
    wnids = sorted(_lines(folder / "wnids.txt"))
    index = {w: i for i, w in enumerate(wnids)}
    words = {}
    for ln in _lines(folder / "words.txt"):
        wnid, _, name = ln.partition("\t")
        words[wnid] = name
    train_paths, train_labels = [], []
    for w in wnids:
        files = sorted((folder / "train" / w / "images").glob("*.JPEG"))
        if not files:
            raise DataError(f"{folder / 'train' / w / 'images'} holds no .JPEG images: the "
                            "extracted folder is incomplete; delete it and prepare again")
        train_paths += files
        train_labels += [index[w]] * len(files)
    val = []
    for ln in _lines(folder / "val" / "val_annotations.txt"):
        parts = ln.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise DataError(f"{folder / 'val' / 'val_annotations.txt'}: bad line {ln!r} (expected "
                            "'<file>\\t<wnid>\\t...' with a wnid from wnids.txt)")
        val.append((index[parts[1]], parts[0]))
    val.sort()  # re-sorted by class, then file name
    val_paths = [folder / "val" / "images" / f for _, f in val]
    splits = {
        "train": RawSplit(decode_images(train_paths, TINY_SIZE), np.asarray(train_labels, np.int64)),
        "val": RawSplit(decode_images(val_paths, TINY_SIZE),
                        np.asarray([c for c, _ in val], np.int64)),
    }
    n_test = len(list((folder / "test" / "images").glob("*.JPEG")))
    return RawDataset(splits, class_names(wnids, words),
                      extra={"wnids": wnids, "unlabelled_test_images_not_offered": n_test})


# ---- writing (for generated stand-ins and tests) ------------------------------------------------
def _jpeg(image: np.ndarray) -> bytes:
    """JPEG bytes of an ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def write_tiny_imagenet_zip(path: Path, train: Mapping[str, Sequence[np.ndarray]],
                            val: Sequence[tuple[np.ndarray, str]], test: Sequence[np.ndarray],
                            words: Mapping[str, str]) -> Path:
    """Write ``tiny-imagenet-200.zip`` in the official layout.

    ``train`` maps wnid -> HWC (or HW grey) uint8 images; ``val`` is (image, wnid) pairs in file
    order; ``test`` unlabelled images; ``words`` wnid -> "name, synonym, ...".
    """
    path = Path(path)
    root = TINY_FOLDER
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        def put(name: str, data: Union[str, bytes]) -> None:  # fixed time stamps: same bytes
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data,
                        compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)

        put(f"{root}/wnids.txt", "".join(f"{w}\n" for w in train))
        put(f"{root}/words.txt", "".join(f"{w}\t{n}\n" for w, n in words.items()))
        for wnid, images in train.items():
            boxes = []
            for i, img in enumerate(images):
                put(f"{root}/train/{wnid}/images/{wnid}_{i}.JPEG", _jpeg(img))
                boxes.append(f"{wnid}_{i}.JPEG\t0\t0\t{img.shape[1] - 1}\t{img.shape[0] - 1}\n")
            put(f"{root}/train/{wnid}/{wnid}_boxes.txt", "".join(boxes))
        ann = []
        for i, (img, wnid) in enumerate(val):
            put(f"{root}/val/images/val_{i}.JPEG", _jpeg(img))
            ann.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t{img.shape[1] - 1}\t{img.shape[0] - 1}\n")
        put(f"{root}/val/val_annotations.txt", "".join(ann))
        for i, img in enumerate(test):
            put(f"{root}/test/images/test_{i}.JPEG", _jpeg(img))
    return path
