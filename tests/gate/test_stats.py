"""The gate's statistics against hand-computed values (and scipy, where it is installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmamba.gate import stats


@pytest.mark.parametrize(("x", "y", "p"), [
    ([1, 2, 3], [4, 5, 6], 1 / 20),  # complete separation: 1 / C(6, 3)
    ([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], 1 / 252),
    ([1, 3], [2, 4], 2 / 6),  # U = 3 of max 4; U in {0, 1, 2, 2, 3, 4} over the 6 orderings
    ([4, 5, 6], [1, 2, 3], 1.0),
])
def test_mann_whitney_exact_small_samples(x, y, p):
    assert stats.mann_whitney_greater(np.array(x, float), np.array(y, float)) == pytest.approx(p, rel=1e-12)


def test_exact_u_distribution_is_a_distribution():
    sf = stats._exact_u_sf(7, 9)
    assert sf[0] == pytest.approx(1.0)
    pmf = -np.diff(np.r_[sf, 0.0])
    assert np.all(pmf >= 0) and pmf.sum() == pytest.approx(1.0)
    assert np.allclose(pmf, pmf[::-1])  # U and n*m - U have the same law
    assert sf[-1] == pytest.approx(stats.min_attainable_p(7, 9))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 60), m=st.integers(2, 60), ties=st.booleans())
def test_mann_whitney_matches_scipy(seed, n, m, ties):
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=n), rng.normal(size=m) + rng.uniform(-1, 1)
    if ties:
        x, y = np.round(x, 1), np.round(y, 1)
    method = "exact" if n * m <= stats.EXACT_MAX_PAIRS and len(np.unique(np.r_[x, y])) == n + m else "asymptotic"
    expected = scipy_stats.mannwhitneyu(y, x, alternative="greater", method=method).pvalue
    assert stats.mann_whitney_greater(x, y) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_threshold_test_shifts_by_the_threshold():
    base = np.linspace(1.0, 1.1, 20)
    new = base * 1.05
    p_worse, p_better = stats.threshold_test(base, new, 0.0)
    assert p_worse < 0.01 and p_better > 0.5
    # against a 5% threshold the same data are no evidence of anything beyond it
    p_worse, p_better = stats.threshold_test(base, new, 0.05)
    assert p_worse > 0.4 and p_better > 0.4
    # for a rate, lower is worse
    p_worse, _ = stats.threshold_test(base, base / 1.05, 0.0, higher_is_better=True)
    assert p_worse < 0.01
    with pytest.raises(ValueError, match="threshold must be >= 0, got -0.1"):
        stats.threshold_test(base, new, -0.1)


def test_holm_adjust():
    assert stats.holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm_adjust([]) == []


def test_median_interval_order_statistics():
    x = np.arange(1.0, 21.0)
    assert stats.median_interval(x, 0.95) == (6.0, 15.0)  # the textbook k = 6 for n = 20
    assert stats.median_interval(x, 0.99) == (4.0, 17.0)
    assert stats.median_interval(np.arange(1.0, 6.0), 0.99) == (0.0, math.inf)  # 5 samples cannot give 99%


def test_median_interval_coverage():
    rng = np.random.default_rng(0)
    hits = sum(lo <= 0.0 <= hi for lo, hi in (stats.median_interval(rng.normal(size=15), 0.95)
                                              for _ in range(2000)))
    assert 0.94 <= hits / 2000 <= 0.99  # exact intervals cover at least their level


def test_bootstrap_ratio_ci_contains_the_ratio_and_is_deterministic():
    rng = np.random.default_rng(1)
    a, b = rng.lognormal(0, 0.01, 40), rng.lognormal(np.log(1.03), 0.01, 40)
    lo, hi = stats.bootstrap_ratio_ci(a, b, confidence=0.99, seed=5)
    assert lo < stats.ratio_of_medians(a, b) < hi
    assert 1.0 < lo and hi < 1.06
    assert stats.bootstrap_ratio_ci(a, b, confidence=0.99, seed=5) == (lo, hi)
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 1.5"):
        stats.bootstrap_ratio_ci(a, b, confidence=1.5)


def test_normal_quantile():
    assert stats._normal_quantile(0.975) == pytest.approx(1.959963984540054, rel=1e-12)
    assert stats._normal_quantile(0.005) == pytest.approx(-2.5758293035489, rel=1e-10)
    assert stats._normal_quantile(0.5) == 0.0


def test_as_samples_rejects_bad_values():
    with pytest.raises(ValueError, match=r"values must be finite and > 0 .*got -1.0"):
        stats.as_samples([1.0, -1.0])
    with pytest.raises(ValueError, match="need at least one value"):
        stats.as_samples([])
