"""Criteria: how important each state of each layer is, as a (ngroups, N) score per layer; higher is kept.

Notation (see `layout`): dt = softplus(delta + bias) is the step size of unit u (a Mamba-1 channel or a Mamba-2
head), A its decay (Mamba-1: A[u, n]; Mamba-2: one A[u] for all states), h[u, p, n] the state, B_n / C_n its
input and output coefficients, shared by the units of group g. E[.] is the mean over calibration tokens (batch
and time) and, where the quantity has them, over a unit's per_unit elements; a score of group g is then the mean
over g's units (Mamba-1 has one group: all channels).

- delta: the PerfMamba paper's Delta-guided activity. dt is per channel or per head, not per state, so:
    Mamba-1: E[dt_u * |A_un|], the state's mean decay rate per step, its Delta-gated activity;
    Mamba-2: dt_u * |A_u| is the same for every state of a head, so the state-dependent part of the gate is
    used instead: E[dt_u * |B_n|], the Delta-gated input written into the state.
- energy: E[h_n^2], the state's mean square.
- contribution: E[(C_n h_n)^2], the mean square of the state's term of the output y = sum_n C_n h_n + D x.
- gramian: a balanced-truncation score from forward statistics (as GHOST for Mamba-2): the empirical
    controllability W_c = E[h_n^2] times the observability W_o = E[C_n^2] / (1 - E[exp(2 dt A_n)]), the
    diagonal of the observability Gramian of a state read out by C_n and decaying by exp(dt A_n) per step in
    the stationary approximation; score sqrt(W_c * W_o), the analogue of a Hankel singular value.
- A: 1 / mean_u |A_un| (Mamba-1 only): modal truncation's prior that slowly decaying states carry the long
    memory. Mamba-2's A is one scalar per head, so it cannot rank states there.
- weight: ||W_B[n]|| * ||W_C[n]||, the norms of the projection rows that compute B_n and C_n (static).
- random: uniform scores from a seeded generator; the baseline every criterion must beat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from perfmamba.pruning.calibration import CalibrationStats, LayerStats

# 1 - E[exp(2 dt A)] is > 0 for any dt > 0, A < 0, but rounds to 0 for states that barely decay.
_MIN_FORGET = 1e-12


@dataclass(frozen=True)
class Criterion:
    name: str
    fn: Callable[[LayerStats, torch.Generator], Tensor]  # -> (ngroups, N) float64
    needs_data: bool
    summary: str
    versions: tuple[int, ...] = (1, 2)
    why_not: str = ""  # why the criterion is undefined for the versions it lacks


def _delta(s: LayerStats, _: torch.Generator) -> Tensor:
    if s.version == 1:
        return s.group_mean(s.mean("delta")[:, None] * s.A_abs)
    return s.group_mean(s.mean("delta_absB"))


def _energy(s: LayerStats, _: torch.Generator) -> Tensor:
    return s.group_mean(s.mean("h2"))


def _contribution(s: LayerStats, _: torch.Generator) -> Tensor:
    return s.group_mean(s.mean("ch2"))


def _gramian(s: LayerStats, _: torch.Generator) -> Tensor:
    controllability = s.mean("h2")  # (units, N)
    forget = (1.0 - s.mean("decay2")).clamp_min(_MIN_FORGET)
    C2 = s.mean("C2").repeat_interleave(s.units_per_group, dim=0)  # (units, N)
    return s.group_mean(torch.sqrt(controllability * C2 / forget))


def _a_magnitude(s: LayerStats, _: torch.Generator) -> Tensor:
    # 1 / mean_u |A_un| as documented: the mean decay over channels first (a mean of 1/|A| would let one
    # channel with a tiny |A| decide the state's score).
    return 1.0 / s.group_mean(s.A_abs).clamp_min(1e-30)


def _weight(s: LayerStats, _: torch.Generator) -> Tensor:
    return s.B_weight * s.C_weight


def _random(s: LayerStats, gen: torch.Generator) -> Tensor:
    return torch.rand(s.ngroups, s.d_state, generator=gen, dtype=torch.float64)


CRITERIA: dict[str, Criterion] = {
    c.name: c
    for c in (
        Criterion("delta", _delta, True, "Mamba-1: E[dt*|A_n|]; Mamba-2: E[dt*|B_n|] (the paper's Delta activity)"),
        Criterion("energy", _energy, True, "E[h_n^2]"),
        Criterion("contribution", _contribution, True, "E[(C_n h_n)^2]"),
        Criterion("gramian", _gramian, True, "sqrt(E[h_n^2] * E[C_n^2] / (1 - E[exp(2 dt A_n)]))"),
        Criterion("A", _a_magnitude, False, "1 / mean |A_n| (Mamba-1)", versions=(1,), why_not=(
            "it needs a per-state decay, but Mamba-2's A is one scalar per head (every state ties); use 'weight' "
            "for a static baseline or a calibrated criterion")),
        Criterion("weight", _weight, False, "||W_B[n]|| * ||W_C[n]||"),
        Criterion("random", _random, False, "uniform, seeded"),
    )
}


def criteria_for(version: int) -> tuple[str, ...]:
    """The criteria defined for Mamba-`version` models."""
    return tuple(name for name, c in CRITERIA.items() if version in c.versions)


def get_criterion(name: str) -> Criterion:
    try:
        return CRITERIA[name]
    except KeyError:
        raise ValueError(f"unknown criterion {name!r}; choose one of: {', '.join(CRITERIA)}") from None


def check_version(c: Criterion, version: int) -> None:
    if version not in c.versions:
        raise ValueError(f"criterion {c.name!r} is not defined for Mamba-{version}: {c.why_not}")


def score(stats: CalibrationStats, criterion: str, *, seed: int = 0) -> list[Tensor]:
    """Per-layer scores (ngroups, N) float64 on the CPU under `criterion` (a name in CRITERIA); higher is kept."""
    c = get_criterion(criterion)
    check_version(c, stats.version)
    if c.needs_data and stats.tokens == 0:
        raise ValueError(f"criterion {criterion!r} needs calibration data (got none); data-free criteria: "
                         f"{', '.join(n for n, k in CRITERIA.items() if not k.needs_data)}")
    gen = torch.Generator().manual_seed(seed)
    scores = [c.fn(layer, gen).double().cpu() for layer in stats.layers]
    for i, s in enumerate(scores):
        if not torch.isfinite(s).all():
            raise ValueError(f"criterion {criterion!r} gave non-finite scores in layer {i} (overflow in "
                             "calibration? try fewer or shorter calibration sequences)")
    return scores
