"""Generated stand-ins for the official CIFAR-100 and Tiny ImageNet-200 files, in their exact
on-disk formats, with just enough images a class for every shipped plan's runs to pass their
pre-run check (``plans.check_images``): the executed rehearsals of the shipped plans run on them
where the real data are absent."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from simpleclr.data.cifar import write_cifar100_archive
from simpleclr.data.fetch import file_hashes
from simpleclr.data.tinyimagenet import write_tiny_imagenet_zip

# The fewest a class that pass every shipped plan's check: CIFAR-100's 1% label share must leave a
# validation image (2 a class, so 150 with rounding), and Tiny ImageNet's 10% size-study subset
# must hold a batch of 512 (26 a class after the kNN monitor's share).
CIFAR_TRAIN, CIFAR_TEST = 150, 10
TINY_TRAIN, TINY_VAL = 30, 5


def _images(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(N, size, size, 3) uint8: a colour per class plus a little noise (compresses well)."""
    colour = (np.arange(256)[:, None] * np.array([37, 91, 53]) % 256).astype(np.int16)
    noise = rng.integers(-8, 9, (len(labels), size, size, 3), dtype=np.int16)
    return np.clip(colour[labels % 256][:, None, None, :] + noise, 0, 255).astype(np.uint8)


def write_official_standins(root: Path, seed: int = 0) -> list[str]:
    """cifar-100-python.tar.gz and tiny-imagenet-200.zip in ``root`` (the data folder a plan
    reads, ``SIMPLECLR_DATA``); returns their sha256s, which a plan accepts through
    ``SIMPLECLR_ACCEPT_CHECKSUM`` in place of the published ones."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    parts = []
    for per in (CIFAR_TRAIN, CIFAR_TEST):
        fine = rng.permutation(np.repeat(np.arange(100), per))
        parts.append((_images(fine, 32, rng).transpose(0, 3, 1, 2).copy(), fine, fine // 5))
    cifar = write_cifar100_archive(root / "cifar-100-python.tar.gz", parts[0], parts[1],
                                   [f"fine{i}" for i in range(100)], [f"coarse{i}" for i in range(20)])
    wnids = [f"n{1000 + i:08d}" for i in range(200)]
    train = dict(zip(wnids, np.split(_images(np.repeat(np.arange(200), TINY_TRAIN), 64, rng), 200)))
    val_labels = rng.permutation(np.repeat(np.arange(200), TINY_VAL))
    val = list(zip(_images(val_labels, 64, rng), (wnids[c] for c in val_labels)))
    tiny = write_tiny_imagenet_zip(root / "tiny-imagenet-200.zip", train, val,
                                   list(_images(np.zeros(2, int), 64, rng)), {w: f"thing{w}, other" for w in wnids})
    return [file_hashes(cifar)[1], file_hashes(tiny)[1]]
