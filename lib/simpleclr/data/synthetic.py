"""Generated stand-ins with learnable class structure, written in the real on-disk formats.

Each class is an oriented sinusoidal grating (orientation x spatial frequency) with a class shape
(disc, square, cross, ring) laid over it. Phase, position, shape size, two colours and pixel noise
are drawn per image, so the class is carried by geometry (orientation, frequency, shape) that
survives random crops, colour jitter and grayscale, not by a colour a model could shortcut on.
Classes are mirror-symmetric, as real object classes are: a class's orientation theta in [0, 90]
is drawn as theta or 180 - theta per image, so a horizontal flip never turns one class into
another (the shapes are symmetric too).
Generation is vectorised numpy and seeded: the same arguments give the same bytes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cifar import write_cifar100_archive
from .tinyimagenet import write_tiny_imagenet_zip

# Bumped whenever the pictures change, so data folders never mix stand-ins of two versions.
GENERATOR_VERSION = 2
SHAPES = ("disc", "square", "cross", "ring")
CYCLES = (2.0, 3.0, 4.5, 6.5, 9.0)  # grating cycles across the image


@dataclass(frozen=True)
class ClassPattern:
    orientation_deg: float
    cycles: float
    shape: str

    @property
    def name(self) -> str:
        return f"o{round(self.orientation_deg):03d}-f{self.cycles:g}-{self.shape}"


def class_patterns(num_classes: int) -> list[ClassPattern]:
    """Distinct (orientation in [0, 90], frequency, shape) per class; orientation varies fastest,
    so neighbouring classes differ only in orientation (five of them form one coarse group)."""
    n_orient = max(4, math.ceil(num_classes / (len(CYCLES) * len(SHAPES))))
    if num_classes > n_orient * len(CYCLES) * len(SHAPES):
        raise ValueError(f"num_classes={num_classes} is too many")
    out = []
    for c in range(num_classes):
        o, rest = c % n_orient, c // n_orient
        out.append(ClassPattern(90.0 * o / (n_orient - 1), CYCLES[rest % len(CYCLES)],
                                SHAPES[rest // len(CYCLES) % len(SHAPES)]))
    return out


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Boolean ``(n, H, W)`` mask of ``shape`` with radius ``r``, from offsets to its centre."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "disc":
        return dx * dx + dy * dy < r * r
    if shape == "square":
        return np.maximum(ax, ay) < 0.85 * r
    if shape == "cross":
        return ((ax < 0.3 * r) & (ay < r)) | ((ay < 0.3 * r) & (ax < r))
    return np.abs(np.sqrt(dx * dx + dy * dy) - 0.75 * r) < 0.22 * r  # ring


def render(labels: np.ndarray, size: int, num_classes: int, rng: np.random.Generator,
           chunk: int = 2048) -> np.ndarray:
    """uint8 ``(N, size, size, 3)`` images of the given class ``labels``."""
    patterns = class_patterns(num_classes)
    theta_c = np.deg2rad([p.orientation_deg for p in patterns]).astype(np.float32)
    cycles_c = np.asarray([p.cycles for p in patterns], np.float32)
    shape_c = np.asarray([SHAPES.index(p.shape) for p in patterns])
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    y, x = coords[None, :, None], coords[None, None, :]
    out = np.empty((len(labels), size, size, 3), dtype=np.uint8)
    for s in range(0, len(labels), chunk):
        lab = np.asarray(labels[s:s + chunk])
        n = len(lab)
        col = lambda v: v.astype(np.float32)[:, None, None]  # noqa: E731  (per-image scalars)
        mirror = rng.random(n) < 0.5  # theta or its horizontal mirror image, 180 - theta
        theta = col(np.where(mirror, np.pi - theta_c[lab], theta_c[lab])
                    + rng.normal(0, np.deg2rad(2.0), n))
        freq = col(cycles_c[lab] * rng.uniform(0.9, 1.1, n))
        phase = col(rng.uniform(0, 2 * np.pi, n))
        grating = np.sin(2 * np.pi * freq * (x * np.cos(theta) + y * np.sin(theta)) + phase)
        cx, cy = col(rng.uniform(-0.18, 0.18, n)), col(rng.uniform(-0.18, 0.18, n))
        r = col(rng.uniform(0.17, 0.25, n))
        mask = np.empty((n, size, size), dtype=bool)
        kinds = shape_c[lab]
        for k in np.unique(kinds):  # each image only computes its own class's shape
            sel = kinds == k
            mask[sel] = _shape_mask(SHAPES[k], x - cx[sel], y - cy[sel], r[sel])
        fill = col(rng.choice([-1.0, 1.0], n))
        lum = np.where(mask, 0.5 + 0.45 * fill, 0.5 + 0.32 * grating)[..., None]
        bright = rng.uniform(0.55, 1.0, (n, 1, 1, 3)).astype(np.float32)
        dark = rng.uniform(0.0, 0.35, (n, 1, 1, 3)).astype(np.float32)
        rgb = dark + lum * (bright - dark)
        rgb += 0.04 * rng.standard_normal(rgb.shape, dtype=np.float32)
        out[s:s + n] = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def _balanced_labels(num_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(num_classes), per_class))


def write_synthetic_cifar100(path: Path, *, n_train_per_class: int = 50, n_test_per_class: int = 10,
                             num_classes: int = 100, seed: int = 0) -> Path:
    """Write a ``cifar-100-python.tar.gz`` (real layout and pickle keys) of generated 32 px images.

    Coarse labels group five neighbouring classes (same frequency and shape, five orientations).
    """
    rng = np.random.default_rng(seed)
    patterns = class_patterns(num_classes)
    n_coarse = math.ceil(num_classes / 5)
    coarse_names = [f"{patterns[5 * k].name.split('-', 1)[1]}" for k in range(n_coarse)]

    def part(per_class: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        labels = _balanced_labels(num_classes, per_class, rng)
        images = render(labels, 32, num_classes, rng).transpose(0, 3, 1, 2)
        return images, labels, labels // 5

    return write_cifar100_archive(path, part(n_train_per_class), part(n_test_per_class),
                                  [p.name for p in patterns], coarse_names)


def write_synthetic_tiny_imagenet(path: Path, *, n_train_per_class: int = 20,
                                  n_val_per_class: int = 5, n_test: int = 20,
                                  num_classes: int = 200, grey_fraction: float = 0.05,
                                  seed: int = 0) -> Path:
    """Write a ``tiny-imagenet-200.zip`` (real layout) of generated 64 px JPEGs.

    About ``grey_fraction`` of the images are stored as single-channel greyscale JPEGs, as some
    real Tiny ImageNet images are, so the loader's grey -> RGB path is exercised.
    """
    rng = np.random.default_rng(seed)
    patterns = class_patterns(num_classes)
    wnids = [f"n{90000000 + c:08d}" for c in range(num_classes)]

    def maybe_grey(img: np.ndarray) -> np.ndarray:
        if rng.random() < grey_fraction:
            return np.rint(img.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])).astype(np.uint8)
        return img

    train_imgs = render(np.repeat(np.arange(num_classes), n_train_per_class), 64, num_classes, rng)
    train = {w: [maybe_grey(im) for im in train_imgs[c * n_train_per_class:(c + 1) * n_train_per_class]]
             for c, w in enumerate(wnids)}
    val_labels = _balanced_labels(num_classes, n_val_per_class, rng)
    val = [(maybe_grey(im), wnids[c]) for im, c in zip(render(val_labels, 64, num_classes, rng),
                                                      val_labels)]
    test = list(render(rng.integers(0, num_classes, n_test), 64, num_classes, rng))
    words = {w: f"{p.name}, synthetic class {c}" for c, (w, p) in enumerate(zip(wnids, patterns))}
    return write_tiny_imagenet_zip(path, train, val, test, words)
