"""What a format reader hands to the cache builder: the splits of one dataset at native size."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class RawSplit:
    """uint8 ``(N, 3, H, W)`` images (may be a lazy memory-mapped view) and int64 labels."""

    images: np.ndarray
    labels: np.ndarray
    coarse_labels: Optional[np.ndarray] = None


@dataclass
class RawDataset:
    """All splits of one dataset as read from its on-disk format."""

    splits: dict[str, RawSplit]
    classes: list[str]
    coarse_classes: Optional[list[str]] = None
    extra: dict = field(default_factory=dict)  # format details worth showing in `info`
