"""Statistics with the process as the unit: each side of a comparison ran in a few processes, each summarised by
the median of its rounds (on the log scale, where changes are multiplicative).

Rounds inside one process share its clocks, memory placement and launch path, so they are not independent draws
of what a new process would measure: a test over rounds calls any shift between two processes "significant" once
there are enough rounds. A t-test on the per-process medians carries that spread into the verdict, but with three
processes a side it has 4 degrees of freedom, and a family of ~100 benchmarks corrected by Holm then needs
t > ~15: a 14% slowdown with 0.8% spread between processes went unflagged on the H200
(docs/results/gate_quality.md). The benchmarks of one run share how much processes spread, so the gate moderates
each benchmark's variance towards the family's, as limma does for a few replicates of many genes (Smyth 2004,
"Linear models and empirical Bayes methods for assessing differential expression"):

    s~^2 = (d0 s0^2 + d s^2) / (d0 + d),   t = (log ratio - log(1 + threshold)) / (s~ sqrt(1/n + 1/m)),   df = d0 + d

with the prior (d0, s0^2) fitted to the benchmarks' variances (`moderation_prior`), s0^2 a trend in the log of
each benchmark's time. Where the variances follow the trend, d0 is large and each benchmark borrows the family's
degrees of freedom; where they scatter widely, d0 falls towards 0 and each stands on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perfmamba.gate.stats import as_samples

# d0 above this is "the variances agree": the prior's own df is then capped here (its s0 is well determined).
MAX_PRIOR_DF = 1000.0


# Student's t ------------------------------------------------------------------------------------------------
def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    # The continued fraction converges fast only on one side of the mean; use the symmetry beyond it.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom (df > 0, not necessarily an integer)."""
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2.0, 0.5)
    return tail if t > 0 else 1.0 - tail


def student_t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (bisection on `student_t_sf`: exact to ~1e-10, and needed once per row)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = -1.0, 1.0
    while student_t_sf(lo, df) < 1 - p:
        lo *= 2
    while student_t_sf(hi, df) > 1 - p:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_sf(mid, df) > 1 - p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


# Polygamma functions for the prior --------------------------------------------------------------------------
def _polygamma(order: int, x: float) -> float:
    """digamma (0), trigamma (1) or tetragamma (2) at x > 0: recurrence up to x >= 8, then the asymptotic series."""
    shift = 0.0
    while x < 8.0:
        shift += (-1.0 / x, 1.0 / x**2, -2.0 / x**3)[order]
        x += 1.0
    if order == 0:
        tail = math.log(x) - 1 / (2 * x) - 1 / (12 * x**2) + 1 / (120 * x**4) - 1 / (252 * x**6)
    elif order == 1:
        tail = 1 / x + 1 / (2 * x**2) + 1 / (6 * x**3) - 1 / (30 * x**5) + 1 / (42 * x**7) - 1 / (30 * x**9)
    else:
        tail = -1 / x**2 - 1 / x**3 - 1 / (2 * x**4) + 1 / (6 * x**6) - 1 / (6 * x**8) + 3 / (10 * x**10)
    return tail + shift


def _trigamma_inverse(y: float) -> float:
    """The x > 0 with trigamma(x) = y (Newton's method from limma's starting point)."""
    if y > 1e7:
        return 1.0 / math.sqrt(y)
    if y < 1e-6:
        return 1.0 / y
    x = 0.5 + 1.0 / y
    for _ in range(100):
        tri = _polygamma(1, x)
        step = tri * (1.0 - tri / y) / _polygamma(2, x)
        x += step
        if -step / x < 1e-8:
            break
    return x


def moderation_prior(variances: Sequence[float], dfs: Sequence[float], trend: Sequence[float] | None = None
                     ) -> tuple[float, np.ndarray] | None:
    """(d0, s0^2 per variance) of a scaled inverse chi-square prior fitted to sample variances with their degrees
    of freedom, by moments of log s^2 (Smyth 2004, section 6.2). With `trend` (a covariate per variance, such as
    the log of the benchmark's time: a 10 us op spreads more between processes than a 30 ms forward), log s0^2 is
    a straight line in it (limma's "trend"), so that quiet and noisy kinds of benchmark each get their own prior.
    Variances <= 0 or with df <= 0 are left out of the fit, and get s0^2 from it all the same. None with fewer
    than 3 usable variances."""
    v, d = np.asarray(variances, dtype=float), np.asarray(dfs, dtype=float)
    x = np.zeros_like(v) if trend is None else np.asarray(trend, dtype=float)
    use = (v > 0) & (d > 0)
    if use.sum() < 3:
        return None
    e = np.log(v[use]) - np.array([_polygamma(0, k / 2) - math.log(k / 2) for k in d[use]])
    degree = 1 if trend is not None and use.sum() >= 6 and np.ptp(x[use]) > 0 else 0
    coef = np.polyfit(x[use], e, degree)
    residual = e - np.polyval(coef, x[use])
    excess = float(np.sum(residual**2) / (use.sum() - degree - 1)) - float(
        np.mean([_polygamma(1, k / 2) for k in d[use]]))
    d0 = MAX_PRIOR_DF if excess <= 0 else min(MAX_PRIOR_DF, 2 * _trigamma_inverse(excess))
    return d0, np.exp(np.polyval(coef, x) + _polygamma(0, d0 / 2) - math.log(d0 / 2))


# The test -----------------------------------------------------------------------------------------------------
def log_process_medians(groups: Sequence[Sequence[float]], what: str) -> np.ndarray:
    return np.log([float(np.median(as_samples(g, what))) for g in groups])


def pooled_variance(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """The variance of one process's log median, pooled over both sides, and its degrees of freedom."""
    df = a.size + b.size - 2
    if df < 1:
        return 0.0, 0
    ss = float(np.sum((a - a.mean()) ** 2) + np.sum((b - b.mean()) ** 2))
    return ss / df, df


@dataclass(frozen=True)
class ProcessTest:
    """The process-level comparison of one benchmark. `ratio`: exp(mean log NEW median - mean log BASE median)
    over the processes; `ci` its two-sided interval; `p_worse` / `p_better` one-sided p-values that NEW is worse /
    better by more than the threshold; `spread`: the (moderated) standard deviation of one process's log median,
    the relative spread between processes; `df` the degrees of freedom of the test."""

    ratio: float
    ci: tuple[float, float]
    p_worse: float
    p_better: float
    df: float
    spread: float
    n_base: int
    n_new: int
    moderated: bool = False


def process_test(
    base_groups: Sequence[Sequence[float]], new_groups: Sequence[Sequence[float]], threshold: float, *,
    higher_is_better: bool = False, confidence: float = 0.99, prior: tuple[float, float] | None = None,
) -> ProcessTest | None:
    """A t-test on the log of each process's median against the practical margin log(1 + threshold), the
    variance pooled over both sides and, with a `prior` (`moderation_prior` over the family), moderated. None
    when neither the processes nor a prior tell the spread (one process a side and no prior)."""
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    a, b = log_process_medians(base_groups, "BASE process"), log_process_medians(new_groups, "NEW process")
    n, m = a.size, b.size
    if n < 1 or m < 1:
        raise ValueError(f"need at least one process a side, got {n} and {m}")
    var, df = pooled_variance(a, b)
    if prior is not None:
        d0, s0 = prior
        var, df = (d0 * s0 + df * var) / (d0 + df), d0 + df
    if df == 0:
        return None
    d = float(b.mean() - a.mean())
    se = math.sqrt(var * (1 / n + 1 / m))
    sign = -1.0 if higher_is_better else 1.0  # on this scale, larger is worse
    delta = math.log1p(threshold)
    spread = math.sqrt(var)
    if se == 0.0:
        p_worse = 0.0 if sign * d > delta else 1.0
        p_better = 0.0 if -sign * d > delta else 1.0
        return ProcessTest(math.exp(d), (math.exp(d), math.exp(d)), p_worse, p_better, df, 0.0, n, m, prior is not None)
    p_worse = student_t_sf((sign * d - delta) / se, df)
    p_better = student_t_sf((-sign * d - delta) / se, df)
    q = student_t_quantile(1 - (1 - confidence) / 2, df)
    return ProcessTest(math.exp(d), (math.exp(d - q * se), math.exp(d + q * se)), p_worse, p_better, df, spread, n,
                       m, prior is not None)
