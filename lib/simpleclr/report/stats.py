"""The uncertainty of an accuracy, and when two of them differ.

One run's test accuracy is a proportion of n test images, so its sampling error is binomial: the
Wilson score interval (Wilson 1927) is the 95% interval, good at small n and near 0 or 100% where
the normal approximation fails. A row whose encoder cannot vary by seed (torchvision's fixed
weights: its seeds would differ only in the probe's folds) is that one run.

A row of several seeds varies two ways at once, and its interval must cover both
(:func:`seeds_and_images`): the seeds (training noise) and the test images (all seeds share one
test set, so its sampling error is common to them and invisible in their spread). Per-image
correctness c[s, i] is a two-way crossed random-effects layout, seed x image (Cornfield-Tukey);
the variance of the grand mean is sigma_seed^2/k + sigma_image^2/n + sigma_e^2/(k n), which the
ANOVA mean squares estimate without bias: (MS_seed - MS_residual)/(k n) for the seeds' part
(k - 1 df) and MS_image/(k n) for the rest (n - 1 df). Each part gets its own t quantile and the
two half-widths add in quadrature: exact where one part dominates, conservative in between,
where Welch-Satterthwaite's pooled df covered only 88% with 2 seeds. Closed form and
deterministic, where a hierarchical bootstrap over seeds and images adds resampling noise and,
with 2-3 seeds, under-covers (a bootstrap of 3 values cannot see the t distribution's tails).
Without per-image predictions (:func:`over_seeds`) the image term is bounded by the binomial
p(1-p)/n, which is conservative. Simulation with known effects (tests/report/test_stats.py)
checks ~95% coverage of both.

Two rows tested on the same images are compared image by image. One run each (:func:`paired`):
only the discordant images carry the difference, so the exact McNemar test decides "higher /
same / lower" at the 5% level, and the 95% interval of the difference is the same test
inverted (Clopper-Pearson on the discordant share, mapped to points), so it excludes 0 exactly
when the test says "higher" or "lower". Several seeds (:func:`paired_seeds`): the mean
difference over all seeds' per-image predictions, its variance the per-image differences'
(images, paired) plus each row's seed variance (each seed's model is its own draw), the parts
again in quadrature, the p-value the level at which that interval reaches 0. A trained row of
one seed borrows the other row's seed variance (the same study's training noise); a
fixed-weights row has none.

A study that tests several cells against one (its best, chosen on training labels) makes several
tests: :func:`holm` corrects their p-values (Holm 1979), which keeps the family-wise error at or
below the level whatever the tests' dependence. Rows without per-image predictions fall back to
:func:`compare`, which calls them different only when their intervals do not overlap.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


@dataclass(frozen=True)
class Interval:
    """An accuracy in percent with its 95% interval and how it was made."""

    value: float
    low: float
    high: float
    basis: str  # "wilson n=10000" or "3 seeds x 10000 test images"

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


def _t_quantile(df: float) -> float:
    """Student-t 97.5% quantile for ``df`` (possibly fractional) degrees of freedom."""
    from scipy import stats as sps  # scikit-learn's dependency, so always installed

    return float(sps.t.ppf(0.975, max(df, 1.0)))


def half_width(parts: Sequence[tuple[float, float]]) -> float:
    """95% half-width of a sum of independent variance parts, each (variance, its df): each
    part's own t quantile, combined in quadrature. Exact where one part dominates (the seeds
    alone: a t interval over them; the images alone: a normal one) and conservative in between,
    where Welch-Satterthwaite's pooled df undercovers with 2 seeds (88% measured in the
    simulation of tests/report/test_stats.py when seed noise was 3 points)."""
    return math.sqrt(sum(_t_quantile(df) ** 2 * max(var, 0.0) for var, df in parts))


def _mean_squares(c: np.ndarray) -> tuple[float, float, float]:
    """(MS_seed, MS_image, MS_residual) of a two-way seed x image table without replication."""
    k, n = c.shape
    grand = c.mean()
    seed_means, image_means = c.mean(axis=1), c.mean(axis=0)
    ss_seed = n * float(((seed_means - grand) ** 2).sum())
    ss_image = k * float(((image_means - grand) ** 2).sum())
    ss_total = float(((c - grand) ** 2).sum())
    ss_res = max(ss_total - ss_seed - ss_image, 0.0)
    return ss_seed / (k - 1), ss_image / max(n - 1, 1), ss_res / max((k - 1) * (n - 1), 1)


def seeds_and_images(correct: Any) -> Interval:
    """Mean accuracy (percent) of ``correct`` (seeds x images, bool) with a 95% interval covering
    both the seeds' spread and the test images' sampling (crossed random effects, see the module
    note); one seed falls back to Wilson."""
    c = np.asarray(correct, dtype=np.float64)
    if c.ndim != 2 or c.size == 0:
        raise ValueError(f"seeds_and_images needs a (seeds, images) table, got shape {c.shape}")
    k, n = c.shape
    if k == 1:
        return wilson(100.0 * float(c.mean()), n)
    ms_seed, ms_image, ms_res = _mean_squares(c)
    kn = k * n
    # the seed means' error sigma_seed^2 / k + sigma_e^2 / (k n) (df k - 1), the images'
    # sigma_image^2 / n (df n - 1): independent parts of the grand mean's error
    half = 100.0 * half_width([(ms_seed / kn, k - 1), ((ms_image - ms_res) / kn, n - 1)])
    mean = 100.0 * float(c.mean())
    return Interval(mean, mean - half, mean + half, f"{k} seeds x {n} test images")


def over_seeds(accuracies_pct: Sequence[float], n: Optional[int] = None) -> Interval:
    """Mean over seeds of accuracies (percent) on ``n`` shared test images, when no per-image
    predictions are at hand: the seeds' variance of the mean plus the binomial p(1-p)/n for the
    test images (an upper bound of their share), in quadrature; one seed: Wilson on ``n``.
    Without ``n`` the test images' share is unknown and only the seeds' spread is left."""
    values = [float(a) for a in accuracies_pct]
    if not values:
        raise ValueError("no accuracies given")
    if len(values) == 1:
        if n is None:
            raise ValueError("one seed: give n, the number of test images, for its interval")
        return wilson(values[0], n)
    k = len(values)
    mean = sum(values) / k
    s2 = sum((v - mean) ** 2 for v in values) / (k - 1)
    parts = [(s2 / k, k - 1)]
    if n:
        parts.append((mean * (100.0 - mean) / n, n - 1))
    half = half_width(parts)
    basis = f"{k} seeds + binomial n={n}" if n else f"t over {k} seeds"
    return Interval(mean, mean - half, mean + half, basis)


def fixed_encoder(accuracies_pct: Sequence[float], n: int) -> Interval:
    """A row whose weights are fixed (runs differ only in the probe's folds): one run, Wilson on
    ``n`` test images around their mean, never an interval over its near-identical repeats."""
    values = [float(a) for a in accuracies_pct]
    if not values:
        raise ValueError("no accuracies given")
    iv = wilson(sum(values) / len(values), n)
    return Interval(iv.value, iv.low, iv.high, f"fixed weights, {iv.basis}")


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
    basis: str  # "McNemar n=10000 (312 vs 250 discordant)" or "paired over 3 vs 3 seeds x 10000 test images"

    def text(self, digits: int = 1, unit: str = "") -> str:
        """``+1.2 [+0.5, +1.9], p=0.002`` (``unit`` follows the difference: ``+1.2 points [...``)."""
        name = "Holm p" if "Holm" in self.basis else "p"
        p = f"{name}={self.p:.3f}" if self.p >= 0.001 else f"{name}<0.001"
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


def t_p_value(t: float, df: float) -> float:
    """Two-sided p-value of a Student-t statistic with ``df`` degrees of freedom."""
    from scipy import stats as sps  # scikit-learn's dependency, so always installed

    return float(2.0 * sps.t.sf(abs(t), df))


def paired_seeds(correct_a: Any, correct_b: Any, fixed_a: bool = False, fixed_b: bool = False) -> Paired:
    """Row a minus row b from every seed's per-image correctness (seeds x images, bool; the same
    images in the same order), see the module note: the mean difference, a t interval and test
    whose variance holds the images' paired differences and each row's seed variance. A row of
    one seed borrows the other's seed variance unless ``fixed_*`` (fixed weights: none). Two rows
    of one seed each: :func:`paired` (exact McNemar)."""
    a, b = (np.atleast_2d(np.asarray(x, dtype=bool)) for x in (correct_a, correct_b))
    if a.shape[1] != b.shape[1] or a.size == 0 or b.size == 0:
        raise ValueError(f"paired_seeds needs (seeds, images) tables of the same images, got "
                         f"{a.shape} and {b.shape}")
    (ka, n), kb = a.shape, b.shape[0]
    if ka == 1 and kb == 1:
        return paired(a[0], b[0])
    d_img = a.mean(axis=0) - b.mean(axis=0)
    diff = float(d_img.mean())
    # as in seeds_and_images: each row's seed means (sigma_seed^2 + sigma_e^2 / n, df k - 1) and
    # the images' paired differences less the residual noise already in those seed means
    parts, residual, seed_var = [], 0.0, {}
    for name, c in (("a", a), ("b", b)):
        if c.shape[0] > 1:
            ms_seed, _, ms_res = _mean_squares(c.astype(np.float64))
            seed_var[name] = (ms_seed, ms_res, c.shape[0] - 1)
            parts.append((ms_seed / (n * c.shape[0]), c.shape[0] - 1))
            residual += ms_res / c.shape[0]
    for name, c, fixed in (("a", a, fixed_a), ("b", b, fixed_b)):
        borrowed = None if fixed or name in seed_var else next(iter(seed_var.values()), None)
        if borrowed is not None:  # a trained row of one seed: the other row's sigma_seed^2
            parts.append(((borrowed[0] - borrowed[1]) / n, borrowed[2]))
    d_var = float(d_img.var(ddof=1)) if n > 1 else 0.0
    parts.append(((d_var - residual) / n, n - 1))
    half = half_width(parts)
    # the test that matches the interval: two-sided at the level where the half-width reaches |diff|
    p = _p_from_half_width(diff, parts)
    verdict = "same" if p >= ALPHA else ("higher" if diff > 0 else "lower")
    return Paired(100.0 * diff, 100.0 * (diff - half), 100.0 * (diff + half), p, verdict,
                  f"paired over {ka} vs {kb} seeds x {n} test images")


def _p_from_half_width(diff: float, parts: Sequence[tuple[float, float]]) -> float:
    """The two-sided p-value of ``diff`` that matches :func:`half_width`'s interval: the level at
    which the quadrature of the parts' t quantiles reaches |diff| (bisection on the level)."""
    from scipy import stats as sps  # scikit-learn's dependency, so always installed

    if diff == 0.0:
        return 1.0
    if sum(max(v, 0.0) for v, _ in parts) == 0.0:
        return 0.0

    var = np.array([max(v, 0.0) for v, _ in parts])
    dfs = np.array([max(df, 1.0) for _, df in parts])

    def reach(alpha: float) -> float:
        return float(np.sqrt((sps.t.ppf(1 - alpha / 2, dfs) ** 2 * var).sum()))

    lo, hi = 1e-12, 1.0  # reach falls as alpha rises
    if reach(lo) < abs(diff):
        return lo
    for _ in range(30):  # geometric bisection: the level to a relative 1e-7
        mid = math.sqrt(lo * hi)
        if reach(mid) > abs(diff):
            lo = mid
        else:
            hi = mid
    return hi


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): reject where adjusted < alpha
    keeps the family-wise error at or below alpha under any dependence between the tests."""
    p = np.asarray([float(x) for x in p_values], dtype=np.float64)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return [float(x) for x in adjusted]


def holm_adjusted(pair: Paired, p_holm: float, family: int) -> Paired:
    """``pair`` with its verdict and p-value replaced by Holm's over a family of ``family`` tests
    (its interval stays the single test's, so the text names the adjustment)."""
    verdict = "same" if p_holm >= ALPHA else ("higher" if pair.diff > 0 else "lower")
    return Paired(pair.diff, pair.low, pair.high, p_holm, verdict,
                  f"{pair.basis}; Holm over {family} tests")
