"""Accuracy intervals against independent references: SciPy's Wilson interval, a bootstrap over
test images, the t interval over seeds; and the rule that calls two rows different."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from simpleclr.report import stats


@pytest.mark.parametrize("k,n", [(1230, 10000), (0, 50), (50, 50), (3, 7), (4999, 10000)])
def test_wilson_matches_scipy(k, n):
    ref = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    got = stats.wilson(100 * k / n, n)
    assert got.low == pytest.approx(100 * ref.low, abs=1e-9)
    assert got.high == pytest.approx(100 * ref.high, abs=1e-9)
    assert got.value == 100 * k / n and got.basis == f"wilson n={n}"


def test_wilson_agrees_with_a_bootstrap_over_test_images():
    """What the issue asked for (a bootstrap over the test images) gives the same interval."""
    rng = np.random.default_rng(0)
    hits = np.zeros(10000, dtype=bool)
    hits[:1230] = True
    boot = [hits[rng.integers(0, hits.size, hits.size)].mean() * 100 for _ in range(4000)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    got = stats.wilson(12.3, 10000)
    assert abs(got.low - lo) < 0.05 and abs(got.high - hi) < 0.05  # Monte Carlo error ~0.02


def test_over_seeds_is_a_t_interval_and_one_seed_falls_back_to_wilson():
    got = stats.over_seeds([10.0, 12.0, 14.0])
    half = sps.t.ppf(0.975, 2) * 2.0 / math.sqrt(3)
    assert got.value == pytest.approx(12.0) and got.basis == "t over 3 seeds"
    assert got.low == pytest.approx(12.0 - half, abs=1e-3) and got.high == pytest.approx(12.0 + half, abs=1e-3)
    assert stats.over_seeds([12.3], n=10000) == stats.wilson(12.3, 10000)
    with pytest.raises(ValueError, match="give n"):
        stats.over_seeds([12.3])


def test_compare_calls_a_difference_only_outside_the_noise():
    floor = stats.wilson(12.3, 10000)  # [11.7, 13.0]
    assert stats.compare(stats.wilson(13.3, 10000), floor) == "same"  # +1.0 point: noise
    assert stats.compare(stats.wilson(16.2, 10000), floor) == "higher"  # +3.9 points
    assert stats.compare(floor, stats.wilson(16.2, 10000)) == "lower"
    assert stats.wilson(12.3, 10000).text() == "12.3 [11.7, 13.0]"


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="at least one test image"):
        stats.wilson(50.0, 0)
    with pytest.raises(ValueError, match="not a percentage"):
        stats.wilson(float("nan"), 10)
