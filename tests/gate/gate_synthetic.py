"""Synthetic benchmark samples with known shifts, and the binomial bound the false-alarm tests assert against.

Noise models: "lognormal" (multiplicative jitter), "outliers" (lognormal plus a fraction of slow rounds, as
when another process takes the core), "gamma" (a right-skewed floor-plus-tail shape). A shift multiplies every
value, so NEW = BASE distribution x factor exactly, the null of the gate's threshold test when factor = 1 + t.
"""

from __future__ import annotations

import math

import numpy as np

from perfmamba.gate.measurement import Measurement

NOISE_MODELS = ("lognormal", "outliers", "gamma")


def draw(rng: np.random.Generator, n: int, noise: float, model: str, factor: float = 1.0,
         scale: float = 1e-3) -> np.ndarray:
    """n timings around `scale` seconds with relative spread ~`noise`, multiplied by `factor`."""
    if model == "lognormal":
        x = rng.lognormal(0.0, noise, n)
    elif model == "outliers":
        x = rng.lognormal(0.0, noise, n)
        slow = rng.random(n) < 0.08
        x[slow] *= 1 + rng.exponential(20 * noise, slow.sum())
    elif model == "gamma":
        # floor 1 plus a gamma tail with standard deviation ~noise
        x = 1.0 + rng.gamma(2.0, noise / math.sqrt(2.0), n)
    else:
        raise ValueError(f"model must be one of {NOISE_MODELS}, got {model!r}")
    return scale * factor * x


def measurement(name: str, samples: np.ndarray, unit: str = "s", higher_is_better: bool = False) -> Measurement:
    return Measurement(name=name, unit=unit, median=float(np.median(samples)), samples=tuple(map(float, samples)),
                       rounds=len(samples), higher_is_better=higher_is_better)


def binomial_bound(trials: int, p: float, tail: float = 1e-4) -> int:
    """The smallest k with P(Binomial(trials, p) >= k) <= tail: a count of false alarms at or above it would
    happen by chance less than `tail` of the time if the per-trial rate were p."""
    pmf = [math.comb(trials, i) * p**i * (1 - p) ** (trials - i) for i in range(trials + 1)]
    upper = 0.0
    for k in range(trials, -1, -1):
        upper += pmf[k]
        if upper > tail:
            return k + 1
    return 0
