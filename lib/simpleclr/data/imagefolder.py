"""Any folder of class sub-folders (``imagefolder:<path>``), optionally with train/ and val/ or test/.

Layouts::

    <path>/<class>/*.jpg                  one split, "train"
    <path>/train/<class>/*.jpg            "train", plus "val" and/or "test" when those folders exist
"""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import DataError
from .images import decode_images, image_size_of, is_image_file
from .raw import RawDataset, RawSplit

EVAL_FOLDERS = ("val", "test")


def split_folders(root: Path) -> dict[str, Path]:
    """The split name -> folder map of an image folder (DataError when it is missing)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist: pass imagefolder:<path> with a folder "
                        "of class sub-folders (optionally inside train/ and val/ or test/)")
    if (root / "train").is_dir():
        return {"train": root / "train", **{s: root / s for s in EVAL_FOLDERS if (root / s).is_dir()}}
    return {"train": root}


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan(root: Path) -> tuple[dict[str, list[tuple[Path, int]]], list[str]]:
    """Every split's (file, label) list and the class names (sorted train sub-folder names)."""
    folders = split_folders(root)
    class_dirs = _class_dirs(folders["train"])
    if not class_dirs:
        raise DataError(f"image folder {folders['train']} has no class sub-folders: put each "
                        "class's images in <folder>/<class name>/")
    classes = [p.name for p in class_dirs]
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, list[tuple[Path, int]]] = {}
    for split, folder in folders.items():
        items = []
        for cdir in _class_dirs(folder):
            if cdir.name not in index:
                raise DataError(f"{cdir} is a class that train/ lacks: every {split}/ class folder "
                                f"must also exist in {folders['train']}")
            files = sorted(p for p in cdir.rglob("*") if p.is_file() and is_image_file(p))
            if not files and split == "train":
                raise DataError(f"class folder {cdir} holds no images (expected files ending in "
                                ".jpg, .png, ...): add images or remove the folder")
            items += [(f, index[cdir.name]) for f in files]
        if not items:
            raise DataError(f"image folder {folder} holds no images: add <class>/<image> files")
        out[split] = items
    return out, classes


def fingerprint(files: list[tuple[Path, int]]) -> str:
    """A hash of the file names, sizes and modification times: changes when the folder does."""
    h = hashlib.sha256()
    for path, label in files:
        st = path.stat()
        h.update(f"{path}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def native_size(files: list[tuple[Path, int]], root: Path) -> int:
    """The common square size of all images, or a DataError asking for ``image_size``."""
    sizes = Counter()
    example: dict[tuple[int, int], Path] = {}
    for path, _ in files:
        s = image_size_of(path)
        sizes[s] += 1
        example.setdefault(s, path)
    if len(sizes) == 1:
        (w, h), = sizes
        if w == h:
            return w
    shown = ", ".join(f"{example[s].name}: {s[0]}x{s[1]}" for s in list(sizes)[:3])
    raise DataError(f"images in {root} are not all one square size ({shown}): pass image_size "
                    "(--image-size N) to scale and centre-crop them to N x N")


def read_imagefolder(root: Path, size: Optional[int] = None) -> RawDataset:
    """Decode every split of the folder at ``size`` (default: the images' common square size)."""
    splits, classes = scan(root)
    all_files = [f for items in splits.values() for f in items]
    size = size or native_size(all_files, root)
    raw = {s: RawSplit(decode_images([p for p, _ in items], size),
                       np.asarray([c for _, c in items], dtype=np.int64))
           for s, items in splits.items()}
    return RawDataset(raw, classes, extra={"folder": str(root), "fingerprint": fingerprint(all_files)})
