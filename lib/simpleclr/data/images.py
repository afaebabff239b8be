"""Decode image files into one uint8 ``(N, 3, S, S)`` array, in threads, naming any bad file."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError
from .progress import Progress

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def open_rgb(path: Path) -> Image.Image:
    """The image at ``path`` as RGB (grey and palette images converted); DataError if unreadable."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read image {path} ({type(e).__name__}: {e}): replace or delete "
                        "that file, then prepare the dataset again") from e


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) from the header only."""
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read image {path} ({type(e).__name__}: {e}): replace or delete "
                        "that file, then prepare the dataset again") from e


def decode_images(paths: Sequence[Path], size: int, threads: Optional[int] = None) -> np.ndarray:
    """Decode ``paths`` to uint8 ``(N, 3, size, size)``; images of another size are scaled on their
    short side to ``size`` and centre-cropped (bicubic), so nothing is stretched."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def one(i: int) -> None:
        img = open_rgb(paths[i])
        if img.size != (size, size):
            img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)
        out[i] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)

    workers = threads or min(8, os.cpu_count() or 1)
    with Progress(len(paths), "decoding images", "img", min_total=5000) as bar:
        if workers <= 1 or len(paths) < 64:
            for i in range(len(paths)):
                one(i)
                bar.update()
        else:
            with ThreadPoolExecutor(workers) as pool:
                for _ in pool.map(one, range(len(paths))):
                    bar.update()
    return out
