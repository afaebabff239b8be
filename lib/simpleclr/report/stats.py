"""The uncertainty of an accuracy, and when two of them differ.

A test accuracy is a proportion of n test images, so its sampling error is binomial: the Wilson
score interval (Wilson 1927) is the 95% interval, good at small n and near 0 or 100% where the
normal approximation fails. It is what a bootstrap over the test images estimates, without the
resampling. Several seeds add training noise: their mean gets a Student-t interval over seeds.
Two rows are called different only when their intervals do not overlap, a conservative rule
(the runs share one test set, so a paired test would be sharper); otherwise the report says the
difference is inside the noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
# Student-t 97.5% quantiles for 1..10 degrees of freedom (more seeds: the normal's is close)
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


@dataclass(frozen=True)
class Interval:
    """An accuracy in percent with its 95% interval and how it was made."""

    value: float
    low: float
    high: float
    basis: str  # "wilson n=10000" or "t over 3 seeds"

    def overlaps(self, other: "Interval") -> bool:
        return self.low <= other.high and other.low <= self.high

    def text(self, digits: int = 1) -> str:
        """``12.3 [11.7, 13.0]``."""
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def wilson(accuracy_pct: float, n: int, z: float = Z95) -> Interval:
    """95% Wilson score interval of an accuracy (percent) measured on ``n`` test images."""
    if n < 1:
        raise ValueError(f"n={n}: an accuracy needs at least one test image")
    if not 0.0 <= accuracy_pct <= 100.0 or math.isnan(accuracy_pct):
        raise ValueError(f"accuracy {accuracy_pct} is not a percentage in [0, 100]")
    p = accuracy_pct / 100.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(accuracy_pct, 100 * max(0.0, centre - half), 100 * min(1.0, centre + half),
                    f"wilson n={n}")


def over_seeds(accuracies_pct: Sequence[float], n: Optional[int] = None) -> Interval:
    """Mean over seeds with a Student-t 95% interval; one seed falls back to Wilson on ``n``."""
    values = [float(a) for a in accuracies_pct]
    if not values:
        raise ValueError("no accuracies given")
    if len(values) == 1:
        if n is None:
            raise ValueError("one seed: give n, the number of test images, for its interval")
        return wilson(values[0], n)
    k = len(values)
    mean = sum(values) / k
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
    t = T95[k - 2] if k - 1 <= len(T95) else Z95
    half = t * sd / math.sqrt(k)
    return Interval(mean, mean - half, mean + half, f"t over {k} seeds")


def compare(a: Interval, b: Interval) -> str:
    """"higher", "lower" or "same" (within the noise) for ``a`` against ``b``."""
    if a.overlaps(b):
        return "same"
    return "higher" if a.value > b.value else "lower"
