"""The statistics of the regression gate, numpy and the standard library only. All of it works on the log
scale: timings are positive and their changes multiplicative, so "NEW is worse than BASE by more than a factor
1 + t" is a shift of log(NEW) beyond log(1 + t).

Two units of evidence:
- **processes** (`processes.process_test`): each side ran in several processes; the unit is the process.
- **rounds** (here: `ratio_of_medians`, `bootstrap_ratio_ci`, `threshold_test`): one process per side; the spread
  between processes is unknown and the verdict says so. A percentile bootstrap of the ratio of medians for the
  interval, and an exact Mann-Whitney test against the threshold for small samples.

`holm_adjust` corrects p-values over a family of benchmarks (valid under any dependence between them).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

# The exact U distribution is computed when both samples are tie-free and n * m is at most this (50 x 50 rounds
# costs ~10 ms once per size pair); beyond it the normal approximation is accurate to well under alpha.
EXACT_MAX_PAIRS = 2500
# Bootstrap resamples are drawn in blocks of at most this many numbers, to bound memory for long sample lists.
_BOOTSTRAP_BLOCK = 4_000_000


def as_samples(values: Sequence[float] | np.ndarray, what: str = "samples") -> np.ndarray:
    """A 1-D float64 array of positive finite values; raises ValueError naming the first bad value."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{what}: need at least one value, got none")
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        raise ValueError(f"{what}: values must be finite and > 0 (timings, bytes, rates), got {float(arr[bad][0])!r}")
    return arr


def ratio_of_medians(base: np.ndarray, new: np.ndarray) -> float:
    return float(np.median(new) / np.median(base))


def _resampled_medians(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty(resamples)
    block = max(1, _BOOTSTRAP_BLOCK // x.size)
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        out[start:stop] = np.median(x[idx], axis=1)
    return out


def bootstrap_ratio_ci(
    base: np.ndarray, new: np.ndarray, *, confidence: float = 0.99, resamples: int = 4000, seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of median(new) / median(base) at `confidence` (two-sided)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 100:
        raise ValueError(f"resamples must be >= 100, got {resamples}")
    rng = np.random.default_rng(seed)
    ratios = _resampled_medians(new, resamples, rng) / _resampled_medians(base, resamples, rng)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(ratios, [tail, 1 - tail])
    return float(lo), float(hi)


def _average_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks with ties given their average rank, and the sizes of the tie groups."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    # Start of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    sizes = np.diff(np.r_[starts, values.size])
    avg = starts + (sizes + 1) / 2.0  # average of ranks start+1 .. start+size
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(avg, sizes)
    return ranks, sizes


@functools.lru_cache(maxsize=256)
def _exact_u_sf(n: int, m: int) -> np.ndarray:
    """sf[u] = P(U >= u) under H0 for U = #{(i, j): x_i < y_j}, |x| = n, |y| = m, no ties.

    Recursion on the largest observation: a y there beats all n x's, an x there beats none, so
    P_{n,m}(u) = m/(n+m) P_{n,m-1}(u - n) + n/(n+m) P_{n-1,m}(u). Probabilities, not counts, so nothing overflows.
    """
    # prev[j] holds the distribution for (i - 1, j); cur[j] for (i, j).
    prev = [np.ones(1) for _ in range(m + 1)]  # i = 0: U = 0 surely
    for i in range(1, n + 1):
        cur = [np.ones(1)]  # j = 0: U = 0 surely
        for j in range(1, m + 1):
            dist = np.zeros(i * j + 1)
            from_y = cur[j - 1]  # largest is a y: U shifts by i
            dist[i : i + from_y.size] += j / (i + j) * from_y
            from_x = prev[j]  # largest is an x: U unchanged
            dist[: from_x.size] += i / (i + j) * from_x
            cur.append(dist)
        prev = cur
    pmf = prev[m]
    sf = np.cumsum(pmf[::-1])[::-1]
    sf.setflags(write=False)
    return sf


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mann_whitney_greater(x: np.ndarray, y: np.ndarray) -> float:
    """One-sided p-value of the Mann-Whitney U test for H1: `y` tends to be larger than `x`."""
    n, m = x.size, y.size
    ranks, tie_sizes = _average_ranks(np.concatenate([x, y]))
    # U counts pairs with x < y, a tie counting one half.
    u = float(ranks[n:].sum() - m * (m + 1) / 2)
    if n * m <= EXACT_MAX_PAIRS and np.all(tie_sizes == 1):
        sf = _exact_u_sf(n, m)
        return float(sf[int(round(u))])
    total = n + m
    tie_term = float(np.sum(tie_sizes**3 - tie_sizes)) / (total * (total - 1))
    var = n * m / 12.0 * ((total + 1) - tie_term)
    if var <= 0:  # every value equal: no evidence either way
        return 1.0
    z = (u - n * m / 2.0 - 0.5) / math.sqrt(var)
    return min(1.0, _normal_sf(z))


def threshold_test(
    base: np.ndarray, new: np.ndarray, threshold: float, *, higher_is_better: bool = False,
) -> tuple[float, float]:
    """One-sided rank-test p-values (p_worse, p_better): p_worse for H1 "NEW is worse than BASE by more than a
    factor 1 + threshold", p_better for H1 "NEW is better by more than that factor". With threshold 0 they
    are the two one-sided Mann-Whitney tests of "no change"."""
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    sign = -1.0 if higher_is_better else 1.0  # on this scale, larger is worse
    a, b = sign * np.log(base), sign * np.log(new)
    delta = math.log1p(threshold)
    return mann_whitney_greater(a, b - delta), mann_whitney_greater(b + delta, a)


def min_attainable_p(n: int, m: int) -> float:
    """The smallest one-sided p-value any data can give with n and m tie-free samples (1 / C(n + m, n))."""
    return 1.0 / math.comb(n + m, n)


def median_interval(x: np.ndarray, confidence: float) -> tuple[float, float]:
    """Distribution-free interval for the median of the population behind `x`: the order statistics
    x_(k) and x_(n+1-k) with the largest k such that P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2.
    (0, inf) when n is too small for any k; the normal approximation of the binomial beyond 1000 samples."""
    s = np.sort(x)
    n = s.size
    tail = (1 - confidence) / 2
    if n > 1000:
        z = _normal_quantile(1 - tail)
        k = int(math.floor(n / 2 - z * math.sqrt(n) / 2))
    else:
        # Exact binomial tail with integers: P(B < k) = sum_{i<k} C(n, i) / 2^n.
        total, cdf, k = 2**n, 0, 0
        while True:
            cdf += math.comb(n, k)
            if cdf / total > tail:
                break
            k += 1
        # Here P(B <= k - 1) <= tail < P(B <= k): x_(k) (1-based) is the lower bound.
    if k < 1:
        return 0.0, math.inf
    return float(s[k - 1]), float(s[n - k])


def quartile_interval(median: float, q1: float, q3: float, n: int, confidence: float) -> tuple[float, float]:
    """Approximate interval for a median known only with its quartiles and sample count (pytest-benchmark
    files saved without data): standard error 1.2533 * sigma / sqrt(n), sigma estimated as IQR / 1.349, as
    for a normal sample. Rougher than intervals from raw samples; the report says when it was used."""
    if n < 2 or not q3 >= q1:
        return 0.0, math.inf
    se = 1.2533 * (q3 - q1) / 1.349 / math.sqrt(n)
    half = _normal_quantile(1 - (1 - confidence) / 2) * se
    return max(0.0, median - half), median + half


def _normal_quantile(p: float) -> float:
    """Inverse of the standard normal CDF (Acklam's rational approximation, refined by one Newton step)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    lo = 0.02425
    if p < lo:
        q = math.sqrt(-2 * math.log(p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    elif p > 1 - lo:
        q = math.sqrt(-2 * math.log(1 - p))
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    else:
        q = p - 0.5
        r = q * q
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    # One Newton step on Phi(x) - p brings the error from ~1e-9 to machine precision.
    err = 0.5 * math.erfc(-x / math.sqrt(2)) - p
    return x - err * math.sqrt(2 * math.pi) * math.exp(x * x / 2)


def holm_adjust(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: reject hypothesis i at family-wise level alpha iff adjusted[i] <
    alpha. Valid under any dependence between the tests (benchmarks of one run share the machine's state)."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.size == 0:
        return []
    order = np.argsort(p, kind="mergesort")
    k = p.size
    scaled = np.minimum(1.0, (k - np.arange(k)) * p[order])
    adjusted_sorted = np.maximum.accumulate(scaled)
    out = np.empty(k)
    out[order] = adjusted_sorted
    return out.tolist()
