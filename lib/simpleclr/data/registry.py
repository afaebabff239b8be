"""The datasets this version knows: where each comes from, how it is laid out, how it is read.

Names: the official ``cifar100``, ``cifar10``, ``tiny-imagenet``, ``stl10``; the generated stand-ins
``synthetic-cifar100`` and ``synthetic-tiny-imagenet`` (sizes set with a suffix, e.g.
``synthetic-cifar100:classes=10,train=20,test=5,seed=1``); and ``imagefolder:<path>``.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable, Mapping, Optional

from .cifar import CIFAR10_FILES, CIFAR10_FOLDER, CIFAR100_FILES, CIFAR100_FOLDER, read_cifar10, read_cifar100
from .errors import DataError
from .raw import RawDataset
from .stl10 import STL_FILES, STL_FOLDER, STL_SIZE, read_stl10
from .synthetic import GENERATOR_VERSION, write_synthetic_cifar100, write_synthetic_tiny_imagenet
from .tinyimagenet import TINY_FILES, TINY_FOLDER, TINY_SIZE, read_tiny_imagenet

IMAGEFOLDER_PREFIX = "imagefolder:"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its archive and official folder, checksum, splits and reader."""

    name: str                      # canonical name; also the cache key
    description: str
    splits: tuple[str, ...]
    native_size: Optional[int]     # None: decided by the files (image folders)
    reader: Callable[[Path], RawDataset]
    folder: str = ""               # the extracted official folder's name
    archive: str = ""              # the archive's file name
    url: Optional[str] = None
    md5: Optional[str] = None      # published md5 of the archive
    required: tuple[str, ...] = () # files whose presence marks an extracted folder complete
    subdir: str = ""               # where under the data dir the archive and folder live
    kind: str = "official"         # "official" | "generated" | "user-folder"
    generator: Optional[Callable[[Path], Path]] = None
    params: Mapping[str, int] = field(default_factory=dict)
    path: Optional[Path] = None    # image folders: the folder itself
    aliases: Mapping[str, str] = field(default_factory=dict)  # asked-for split -> served split
    n_train: Optional[int] = None  # images in the train split; None: known only from the files
    n_test: Optional[int] = None   # images in the split served as "test" (Tiny ImageNet: val)

    @property
    def key(self) -> str:
        """The folder name of this dataset's cache (and, for stand-ins, of its files)."""
        return self.subdir or self.name


_CIFAR100 = DatasetSpec(
    "cifar100", "CIFAR-100: 50,000 train / 10,000 test 32x32 images, 100 fine and 20 coarse classes",
    ("train", "test"), 32, read_cifar100, CIFAR100_FOLDER, "cifar-100-python.tar.gz",
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
    CIFAR100_FILES, n_train=50000, n_test=10000)
_CIFAR10 = DatasetSpec(
    "cifar10", "CIFAR-10: 50,000 train / 10,000 test 32x32 images, 10 classes",
    ("train", "test"), 32, read_cifar10, CIFAR10_FOLDER, "cifar-10-python.tar.gz",
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
    CIFAR10_FILES, n_train=50000, n_test=10000)
_TINY = DatasetSpec(
    "tiny-imagenet", "Tiny ImageNet-200: 100,000 train / 10,000 labelled val 64x64 images, 200 "
    "classes (the unlabelled test split is not offered; 'test' serves val)",
    ("train", "val"), TINY_SIZE, read_tiny_imagenet, TINY_FOLDER, "tiny-imagenet-200.zip",
    "http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de",
    TINY_FILES, aliases={"test": "val"}, n_train=100000, n_test=10000)
_STL10 = DatasetSpec(
    "stl10", "STL-10: 100,000 unlabeled (labels -1) + 5,000 train / 8,000 test 96x96 images, "
    "10 classes", ("train", "test", "unlabeled"), STL_SIZE, read_stl10, STL_FOLDER,
    "stl10_binary.tar.gz", "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
    "91f7769df0f17e558f3565bffb0c7dfb", STL_FILES, n_train=5000, n_test=8000)

DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (_CIFAR100, _CIFAR10, _TINY, _STL10)}

# generated stand-ins: (format they imitate, generator, parameter -> generator argument, defaults)
SYNTHETIC: dict[str, tuple[DatasetSpec, Callable[..., Path], dict[str, str], dict[str, int]]] = {
    "synthetic-cifar100": (_CIFAR100, write_synthetic_cifar100,
                           {"classes": "num_classes", "train": "n_train_per_class",
                            "test": "n_test_per_class", "seed": "seed"},
                           {"classes": 100, "train": 50, "test": 10, "seed": 0}),
    "synthetic-tiny-imagenet": (_TINY, write_synthetic_tiny_imagenet,
                                {"classes": "num_classes", "train": "n_train_per_class",
                                 "val": "n_val_per_class", "seed": "seed"},
                                {"classes": 200, "train": 20, "val": 5, "seed": 0}),
}


def available_datasets() -> list[str]:
    """Every dataset name this version accepts (``imagefolder:<path>`` stands for a pattern)."""
    return [*DATASETS, *SYNTHETIC, f"{IMAGEFOLDER_PREFIX}<path>"]


def _unknown(name: str) -> DataError:
    return DataError(f"unknown dataset {name!r}: use one of {', '.join(available_datasets())}")


def _synthetic(name: str) -> DatasetSpec:
    base, _, args = name.partition(":")
    like, generator, argnames, defaults = SYNTHETIC[base]
    params = dict(defaults)
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if key not in argnames or not eq or not value.strip().isdigit():
            raise DataError(f"bad parameter {item!r} in {name!r}: use {base}:"
                            + ",".join(f"{k}=N" for k in defaults) + " (non-negative integers)")
        params[key] = int(value)
    for key in params:
        if key != "seed" and params[key] < 1:
            raise DataError(f"{name!r}: {key} must be at least 1")
    if not 2 <= params["classes"] <= 1000:
        raise DataError(f"{name!r}: classes must be in [2, 1000]")
    changed = {k: v for k, v in sorted(params.items()) if v != defaults[k]}
    key = base + "".join(f"-{k}{v}" for k, v in changed.items()) + f"-v{GENERATOR_VERSION}"
    canonical = base + (":" + ",".join(f"{k}={v}" for k, v in changed.items()) if changed else "")
    counts = ", ".join(f"{params[k]} {k}" for k in argnames if k not in ("classes", "seed"))
    return replace(
        like, name=canonical, kind="generated", subdir=key, url=None, md5=None,
        description=f"generated stand-in in the {like.name} format: {params['classes']} classes "
                    f"(oriented grating + shape), {counts} images per class, "
                    f"{like.native_size}x{like.native_size}, seed {params['seed']}",
        generator=partial(_generate, generator, {argnames[k]: v for k, v in params.items()}),
        params={**params, "version": GENERATOR_VERSION}, n_train=params["classes"] * params["train"],
        n_test=params["classes"] * params.get("test", params.get("val", 0)))


def _generate(generator: Callable[..., Path], kwargs: dict, path: Path) -> Path:
    return generator(path, **kwargs)


def _imagefolder(name: str) -> DatasetSpec:
    from .imagefolder import read_imagefolder

    raw_path = name[len(IMAGEFOLDER_PREFIX):].strip()
    if not raw_path:
        raise DataError("imagefolder needs a path: use imagefolder:<folder of class sub-folders>")
    path = Path(raw_path).expanduser().resolve()
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.name or "root").strip("-") or "folder"
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    return DatasetSpec(f"{IMAGEFOLDER_PREFIX}{path}", f"image folder {path}", ("train", "val", "test"),
                       None, read_imagefolder, kind="user-folder", path=path,
                       subdir=f"imagefolder-{slug}-{digest}", aliases={"test": "val", "val": "test"})


def get_spec(name: str) -> DatasetSpec:
    """The spec for a dataset name, or a DataError listing the valid names."""
    if not isinstance(name, str) or not name.strip():
        raise _unknown(str(name))
    name = name.strip()
    if name.startswith(IMAGEFOLDER_PREFIX):
        return _imagefolder(name)
    if name.split(":", 1)[0] in SYNTHETIC:
        return _synthetic(name)
    if name in DATASETS:
        return DATASETS[name]
    raise _unknown(name)
