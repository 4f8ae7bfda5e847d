"""What a pruning run is asked to do: `PruneConfig`, its validation, and how many states a layer keeps.

The kept count follows the PerfMamba paper: k = floor(N (1 - r)) states of N. Kernels then constrain k:
mamba-ssm's fused Mamba-2 path asserts that its conv channels, d_inner + 2 * ngroups * N', are a multiple of 8,
so ngroups * N' must be a multiple of 4 (on an H100, N' = 100 runs and 102 fails), and the Triton SSD kernels
tile N up to a power of two, so some legal counts save nothing. `multiple` rounds k up to a legal multiple, or
with "pow2" down to a power of two (the tile the SSD kernels run anyway; see benchmarks/ssd_dstate_sweep.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from perfmamba.checks import check_at_least, check_choice, check_in_range
from perfmamba.models.config import ModelConfig
from perfmamba.pruning.criteria import get_criterion

Allocation = Literal["uniform", "global"]
Mode = Literal["remove", "mask"]
ALLOCATIONS: tuple[str, ...] = ("uniform", "global")
PRUNE_MODES: tuple[str, ...] = ("remove", "mask")
# Floating-point guard for floor(N * (1 - r)): 10 * (1 - 0.9) is 0.9999999999999998.
_EPS = 1e-9


@dataclass(frozen=True)
class PruneConfig:
    """One pruning run. Defaults are what `prune_states` does when given only a ratio and calibration data.

    ratio: fraction of each layer's states to remove, in [0, 1) (`global`: of all states of the model).
    criterion: how states are scored, a name in `perfmamba.pruning.CRITERIA`.
    allocation: "uniform" keeps the same count in every layer (the paper's); "global" ranks the states of all
        layers together after normalising scores per layer (layer-adaptive, as LAST), at least `min_states`
        per layer.
    mode: "remove" slices the states out of the weights (smaller d_state, runs on the same kernels); "mask"
        zeroes them in place (same shapes; the paper's second configuration).
    min_states: fewest states a layer may keep (`global` allocation; also the floor below which `uniform`
        refuses rather than round up).
    multiple: kept counts are rounded up to a multiple of this (never above d_state), or "pow2" rounds them
        down to a power of two. None: the smallest count mamba-ssm's kernels accept (1 for Mamba-1; for
        Mamba-2 the smallest m with ngroups * m a multiple of 4).
    seed: for the `random` criterion.
    batch_size, seq_len: how a flat token stream is cut for calibration (a 2-D tensor keeps its rows). seq_len
        is the calibration window, and it matters: a state that decays slowly carries memory over thousands of
        tokens, and its activity (h_n, C_n h_n) only builds up over a window that long; calibrated in windows of
        256 it looks idle and is cut first, although the model needs it at the context it serves. Calibrate at
        the length the model will serve (the report records the length used). The default stays 256, the
        length of every published result so far; a longer window costs time linearly (the calibration's
        recurrence runs step by step over time).
    max_batches: stop calibrating after this many batches (None: all).
    """

    ratio: float = 0.5
    criterion: str = "contribution"
    allocation: Allocation = "uniform"
    mode: Mode = "remove"
    min_states: int = 1
    multiple: int | Literal["pow2"] | None = None
    seed: int = 0
    batch_size: int = 8
    seq_len: int = 256
    max_batches: int | None = None

    def __post_init__(self) -> None:
        check_allocation(self.ratio, self.allocation, self.multiple, self.min_states)
        get_criterion(self.criterion)
        check_choice("mode", self.mode, PRUNE_MODES)
        for name in ("batch_size", "seq_len"):
            check_at_least(name, getattr(self, name))
        check_at_least("max_batches", self.max_batches, optional=True)


def check_ratio(ratio: float) -> None:
    check_in_range("ratio", ratio, 0.0, 1.0)


def check_multiple(multiple: int | str | None) -> None:
    if multiple is None or multiple == "pow2":
        return
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple must be None, 'pow2' or an integer >= 1, got {multiple!r}")


def check_allocation(ratio: float, allocation: str = "uniform", multiple: int | str | None = None,
                     min_states: int = 1) -> None:
    """The rules of an allocation, in one place: the ratio, the allocation's name, the multiple (and "pow2" with
    uniform allocation only) and `min_states`."""
    check_ratio(ratio)
    check_choice("allocation", allocation, ALLOCATIONS)
    check_multiple(multiple)
    if multiple == "pow2" and allocation != "uniform":
        raise ValueError("multiple='pow2' works with allocation='uniform' only (global allocation ranks blocks "
                         "of equal size); give an integer multiple instead")
    check_at_least("min_states", min_states, why=" (a layer needs a state)")


def parse_multiple(text: str | None) -> int | str | None:
    """A `multiple` from the command line: an integer >= 1, "pow2", or None/"legal" for the default."""
    if text is None or text == "legal":
        return None
    if text == "pow2":
        return "pow2"
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"multiple must be an integer >= 1, 'pow2' or 'legal', got {text!r}") from None
    check_multiple(value)
    return value


def legal_multiple(config: ModelConfig) -> int:
    """The smallest multiple of kept states that mamba-ssm's kernels accept for this model."""
    if config.version == 1:
        return 1
    # conv channels d_inner + 2 * ngroups * N' must be a multiple of 8 (mamba_split_conv1d_scan_combined).
    return 4 // math.gcd(config.ngroups, 4)


def resolve_multiple(multiple: int | str | None, config: ModelConfig) -> int | str:
    """`multiple` as given, or the legal default; an integer multiple must itself be legal for Mamba-2."""
    check_multiple(multiple)
    legal = legal_multiple(config)
    if multiple is None:
        return legal
    if isinstance(multiple, int) and (multiple * config.ngroups) % 4 and config.version == 2:
        raise ValueError(
            f"multiple={multiple} allows d_state values that mamba-ssm's fused Mamba-2 kernel rejects "
            f"(ngroups * d_state must be a multiple of 4, ngroups={config.ngroups}); use a multiple of {legal}"
        )
    return multiple


def kept_count(d_state: int, ratio: float, multiple: int | str = 1, min_states: int = 1, legal: int = 1) -> int:
    """States a layer of `d_state` keeps under uniform allocation: floor(d_state * (1 - ratio)) (the PerfMamba
    paper's k), rounded up to `multiple` (never above d_state) or, for "pow2", down to a power of two but not
    below `legal` (`legal_multiple`: a power of two, so the result stays a size the kernels accept).

    Raises if that leaves fewer than `min_states` (with min_states=1: zero states) before rounding up."""
    check_allocation(ratio, "uniform", multiple, min_states)
    return _kept_count(d_state, ratio, multiple, min_states, legal)


def _kept_count(d_state: int, ratio: float, multiple: int | str, min_states: int, legal: int) -> int:
    k = math.floor(d_state * (1.0 - ratio) + _EPS)
    if k < min_states:
        worst = 1.0 - min_states / d_state
        raise ValueError(
            f"ratio {ratio} keeps floor({d_state} * (1 - {ratio})) = {k} states of d_state={d_state}, fewer than "
            f"min_states={min_states}; use a ratio <= {worst:.6g}"
        )
    if k == d_state:
        return k
    if multiple == "pow2":
        p = max(1 << (k.bit_length() - 1), legal)
        return p if p >= min_states else min(d_state, 2 * p)
    return min(d_state, int(multiple) * math.ceil(k / int(multiple)))
