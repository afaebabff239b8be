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


# ---- paired comparisons ----------------------------------------------------------------------
@pytest.mark.parametrize("b,c", [(0, 0), (0, 7), (12, 3), (250, 312), (5000, 5100), (40, 40), (1, 0)])
def test_exact_mcnemar_is_the_binomial_test_of_the_discordant_pairs(b, c):
    ref = sps.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    assert stats.mcnemar_exact(b, c) == pytest.approx(ref, rel=1e-9, abs=1e-300)


def test_exact_mcnemar_matches_the_contingency_table_form():
    """The 2x2 table's exact McNemar p (as statsmodels.stats.contingency_tables.mcnemar(exact=True)
    computes it: binom.cdf of the smaller off-diagonal count, doubled) from the per-image vectors."""
    rng = np.random.default_rng(3)
    a = rng.random(2000) < 0.6
    b = np.where(rng.random(2000) < 0.9, a, ~a)
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    lo, hi = sorted((table[0, 1], table[1, 0]))
    ref = min(1.0, 2 * sps.binom.cdf(lo, lo + hi, 0.5))
    got = stats.paired(a, b)
    assert got.p == pytest.approx(ref, rel=1e-9)
    assert got.diff == pytest.approx(100 * (a.mean() - b.mean()))
    assert got.basis == f"McNemar n=2000 ({table[0, 1]} vs {table[1, 0]} discordant)"


def test_paired_interval_agrees_with_a_paired_bootstrap():
    """The inverted exact test against an independent reference: resampling test images, both
    rows' outcomes kept together."""
    rng = np.random.default_rng(4)
    n = 10000
    a = rng.random(n) < 0.45
    b = np.where(rng.random(n) < 0.8, a, rng.random(n) < 0.43)
    got = stats.paired(a, b)
    idx = rng.integers(0, n, (2000, n))
    boot = 100 * (a[idx].mean(1) - b[idx].mean(1))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    assert abs(got.low - lo) < 0.1 and abs(got.high - hi) < 0.1, (got, lo, hi)
    assert got.low < got.diff < got.high


@pytest.mark.parametrize("b,c,n", [(312, 250, 10000), (0, 7, 200), (5, 0, 50), (40, 40, 1000), (1, 2, 10)])
def test_paired_interval_is_the_clopper_pearson_interval_of_the_discordant_split(b, c, n):
    ci = sps.binomtest(b, b + c, 0.5).proportion_ci(0.95, method="exact")
    low, high = stats.discordant_interval(b, c, n)
    assert low == pytest.approx((b + c) / n * (2 * ci.low - 1), abs=1e-12)
    assert high == pytest.approx((b + c) / n * (2 * ci.high - 1), abs=1e-12)


def test_paired_interval_excludes_zero_exactly_when_the_test_finds_a_difference():
    for b in range(0, 40):
        for c in range(0, 40):
            low, high = stats.discordant_interval(b, c, 1000)
            assert (low > 0 or high < 0) == (stats.mcnemar_exact(b, c) < 0.05), (b, c)


def _simulated_pair(rng, n, acc_a, acc_b, agreement=0.8):
    """Per-image correctness of two predictors with true accuracies acc_a and acc_b that share
    most of their mistakes (as two classifiers on one test set do)."""
    shared = rng.random(n)
    own_a, own_b = rng.random(n), rng.random(n)
    pick = rng.random(n) < agreement
    a = np.where(pick, shared, own_a) < acc_a
    b = np.where(pick, shared, own_b) < acc_b
    return a, b


def test_a_true_one_point_difference_on_10000_images_is_found_most_of_the_time():
    rng = np.random.default_rng(5)
    verdicts = [stats.paired(*_simulated_pair(rng, 10000, 0.51, 0.50)).verdict for _ in range(300)]
    assert verdicts.count("higher") / 300 > 0.8, verdicts.count("higher")  # power ~0.88 here
    assert verdicts.count("lower") == 0
    # the unpaired rule (intervals overlap) misses nearly all of them
    unpaired = [stats.compare(stats.wilson(51.0, 10000), stats.wilson(50.0, 10000))]
    assert unpaired == ["same"]


def test_no_true_difference_is_called_same_about_95_percent_of_the_time():
    rng = np.random.default_rng(6)
    results = [stats.paired(*_simulated_pair(rng, 10000, 0.5, 0.5)) for _ in range(1000)]
    same = sum(r.verdict == "same" for r in results) / 1000
    covered = sum(r.low <= 0 <= r.high for r in results) / 1000
    assert 0.93 <= same <= 0.985, same  # the exact test is slightly conservative
    assert 0.93 <= covered <= 0.97, covered


def test_paired_over_seeds_is_a_t_test_of_the_per_seed_differences():
    acc_a, acc_b = np.array([41.0, 43.5, 42.2]), np.array([39.8, 41.0, 40.9])
    got = stats.paired_over_seeds(acc_a - acc_b)
    ref = sps.ttest_rel(acc_a, acc_b)
    ci = ref.confidence_interval(0.95)
    assert got.p == pytest.approx(ref.pvalue, rel=1e-6)
    assert got.low == pytest.approx(ci.low, abs=2e-3) and got.high == pytest.approx(ci.high, abs=2e-3)
    assert got.verdict == ("higher" if ref.pvalue < 0.05 else "same") and got.basis == "paired t over 3 seeds"
    assert stats.paired_over_seeds([1.0, -1.0, 0.5]).verdict == "same"
    with pytest.raises(ValueError, match="at least two seeds"):
        stats.paired_over_seeds([1.0])


def test_paired_text_and_bad_input():
    got = stats.Paired(1.234, 0.5, 1.9, 0.0004, "higher", "x")
    assert got.text() == "+1.2 [+0.5, +1.9], p<0.001"
    assert stats.Paired(-0.3, -1.0, 0.4, 0.41, "same", "x").text() == "-0.3 [-1.0, +0.4], p=0.410"
    with pytest.raises(ValueError, match="equal-length"):
        stats.paired([True, False], [True])
