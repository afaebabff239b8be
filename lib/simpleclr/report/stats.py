"""The uncertainty of an accuracy, and when two of them differ.

A test accuracy is a proportion of n test images, so its sampling error is binomial: the Wilson
score interval (Wilson 1927) is the 95% interval, good at small n and near 0 or 100% where the
normal approximation fails. It is what a bootstrap over the test images estimates, without the
resampling. Several seeds add training noise: their mean gets a Student-t interval over seeds.

Two rows tested on the same images are compared image by image (:func:`paired`): only the images
one gets right and the other wrong (the discordant pairs) carry the difference, so the exact
McNemar test (a binomial test of those pairs at one half) decides "higher / same / lower" at the
5% level. The 95% interval of the difference in points is the same test inverted: the
Clopper-Pearson interval of the share of discordant pairs that favour row a, mapped to points by
the number of discordant pairs (difference = discordant / n x (2 share - 1)). Closed form,
deterministic, and it excludes 0 exactly when the test says "higher" or "lower", so a table never
shows an interval off zero beside "same"; conditioning on the discordant count costs little (its
relative error is 1/sqrt(count), a few percent of the difference at CIFAR-100's 10,000 images).
With several seeds (:func:`paired_over_seeds`), each seed's difference is measured on the same
images and the mean difference gets a Student-t interval and test over seeds: the seed-to-seed
training noise is then part of the error, which pooling every seed's images into one McNemar table
would leave out (and one lucky seed could then decide the verdict). Rows without per-image
predictions fall back to :func:`compare`, which calls them different only when their intervals do
not overlap (a conservative rule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

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


ALPHA = 0.05  # the level of every paired test: its 95% interval excludes 0 exactly when p < ALPHA


@dataclass(frozen=True)
class Paired:
    """Row a minus row b on the same test images: the difference in points, its 95% interval,
    the test's two-sided p-value and its verdict ("higher", "same" or "lower" for a)."""

    diff: float
    low: float
    high: float
    p: float
    verdict: str
    basis: str  # "McNemar n=10000 (312 vs 250 discordant)" or "paired t over 3 seeds"

    def text(self, digits: int = 1, unit: str = "") -> str:
        """``+1.2 [+0.5, +1.9], p=0.002`` (``unit`` follows the difference: ``+1.2 points [...``)."""
        p = f"p={self.p:.3f}" if self.p >= 0.001 else "p<0.001"
        return f"{self.diff:+.{digits}f}{unit} [{self.low:+.{digits}f}, {self.high:+.{digits}f}], {p}"


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of ``b`` successes in ``b + c``
    discordant pairs at probability one half (twice the smaller tail, at most 1)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b} and {c}")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    log_half = n * math.log(0.5)
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half
                 for i in range(k + 1)]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return min(1.0, 2.0 * tail)


def discordant_interval(only_a: int, only_b: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Interval (proportions) of acc(a) - acc(b) from the discordant counts on ``n`` images: the
    Clopper-Pearson interval of only_a / (only_a + only_b), times the discordant share; the exact
    McNemar test inverted, so it excludes 0 iff :func:`mcnemar_exact` is below ``alpha``."""
    from scipy import stats as sps  # scikit-learn's dependency, so always installed

    if n < 1 or only_a < 0 or only_b < 0 or only_a + only_b > n:
        raise ValueError(f"discordant counts {only_a}, {only_b} do not fit {n} images")
    d = only_a + only_b
    if d == 0:
        return 0.0, 0.0
    lo = 0.0 if only_a == 0 else float(sps.beta.ppf(alpha / 2, only_a, only_b + 1))
    hi = 1.0 if only_b == 0 else float(sps.beta.ppf(1 - alpha / 2, only_a + 1, only_b))
    return d / n * (2 * lo - 1), d / n * (2 * hi - 1)


def paired(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> Paired:
    """Row a against row b from their per-image correctness on the same test images, in the same
    order: exact McNemar verdict at the 5% level and the 95% interval of the difference."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired needs two equal-length, non-empty correctness vectors, got "
                         f"{a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = mcnemar_exact(only_a, only_b)
    low, high = discordant_interval(only_a, only_b, a.size)
    verdict = "same" if p >= ALPHA else ("higher" if only_a > only_b else "lower")
    return Paired(100.0 * (only_a - only_b) / a.size, 100.0 * low, 100.0 * high, p, verdict,
                  f"McNemar n={a.size} ({only_a} vs {only_b} discordant)")


def t_p_value(t: float, df: int) -> float:
    """Two-sided p-value of a Student-t statistic with ``df`` degrees of freedom."""
    from scipy import stats as sps  # scikit-learn's dependency, so always installed

    return float(2.0 * sps.t.sf(abs(t), df))


def paired_over_seeds(diffs_pct: Sequence[float]) -> Paired:
    """Mean of per-seed paired differences (points, each seed's two runs on the same images) with
    a Student-t 95% interval and test over seeds; the verdict is the t-test's at the 5% level."""
    d = [float(x) for x in diffs_pct]
    k = len(d)
    if k < 2:
        raise ValueError("paired_over_seeds needs at least two seeds (one seed: use paired)")
    mean = sum(d) / k
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (k - 1))
    t_crit = T95[k - 2] if k - 1 <= len(T95) else Z95
    half = t_crit * sd / math.sqrt(k)
    if sd == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
    else:
        p = t_p_value(mean / (sd / math.sqrt(k)), k - 1)
    verdict = "same" if p >= ALPHA else ("higher" if mean > 0 else "lower")
    return Paired(mean, mean - half, mean + half, p, verdict, f"paired t over {k} seeds")
