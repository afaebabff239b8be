"""Decode image files into one uint8 ``(N, 3, S, S)`` array, in threads, naming any bad file."""
from __future__ import annotations

import os
import warnings
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


# One-channel modes with more than 8 bits: Pillow's convert("RGB") clips them at 255 instead of
# scaling (a 16-bit grey PNG came out 99.6% white). 16-bit RGB(A) PNGs already arrive as 8 bits.
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _to_8_bit(img: Image.Image, path: Path) -> Image.Image:
    """A 16-bit grey image scaled to 8 bits (0..65535 onto 0..255, rounded); DataError for 32-bit
    integer or float pixels, whose range the file does not state."""
    if img.mode in _SIXTEEN_BIT or (img.mode == "I" and img.format == "PNG"):  # PNG: 16 bits at most
        x = np.asarray(img, dtype=np.uint32)
        return Image.fromarray(((x * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    raise DataError(f"image {path} has {'32-bit integer' if img.mode == 'I' else 'floating-point'} "
                    f"pixels (mode {img.mode}), whose range is unknown: convert it to 8 or 16 bits "
                    "per channel, then prepare the dataset again")


# The most pixels one image may decode to: a 64-megapixel RGB image is 192 MB, and decoding runs
# in up to 8 threads. Larger images (a decompression bomb: a 20000 x 20000 PNG is a few kB and
# 1.2 GB decoded) are refused from their header before any pixel is decoded; a larger JPEG is
# decoded at 1/2, 1/4 or 1/8 scale instead (libjpeg's DCT scaling), which costs only the smaller
# image and changes nothing once it is scaled to the training size.
MAX_IMAGE_PIXELS = 64_000_000


def _too_large(path: Path, size: tuple[int, int]) -> DataError:
    w, h = size
    return DataError(f"image {path} is {w}x{h} pixels ({w * h / 1e6:.0f} MP), more than the "
                     f"{MAX_IMAGE_PIXELS // 1_000_000} MP one image may decode to (a decompression "
                     "bomb, or a picture far larger than training needs): shrink it, e.g. "
                     "`mogrify -resize 4096x4096 FILE`, or delete it, then prepare the dataset again")


def _open(path: Path) -> Image.Image:
    """``Image.open`` (header only) with Pillow's own bomb limit turned into our one line:
    images past it raise before we can read their size, and those near it warn."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError:
            raise DataError(f"image {path} declares more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP "
                            f"(a decompression bomb, or a picture far larger than training needs): "
                            "shrink it or delete it, then prepare the dataset again") from None


def open_rgb(path: Path) -> Image.Image:
    """The image at ``path`` as 8-bit RGB (grey, palette and 16-bit images converted); DataError
    if unreadable or larger than :data:`MAX_IMAGE_PIXELS` (a larger JPEG is decoded at the
    largest of 1/2, 1/4 or 1/8 scale that fits under it: at least 1000 pixels a side)."""
    try:
        with _open(path) as img:
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS and img.format == "JPEG":
                scale = next((s for s in (2, 4, 8) if w * h <= MAX_IMAGE_PIXELS * s * s), 8)
                img.draft("RGB", (-(-w // scale), -(-h // scale)))
                w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise _too_large(path, (w, h))
            img.load()
            if img.mode in _SIXTEEN_BIT or img.mode in ("I", "F"):
                img = _to_8_bit(img, path)
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read image {path} ({type(e).__name__}: {e}): replace or delete "
                        "that file, then prepare the dataset again") from e


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) from the header only."""
    try:
        with _open(path) as img:
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
