"""Hypothesis strategies shared by the test suite: op shapes here; model/config strategies can join them.

Strategies draw shapes and a seed, not tensor elements: the tests build tensors from the seed with torch, which
keeps each example fast and lets hypothesis shrink towards small shapes. Every shape strategy bounds the work
of one example (roughly batch * channels * d_state * L), so the float64 oracles stay quick on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

# Work budget per example: elements of the largest (b, d, N, L) intermediate of the oracle recurrence.
WORK = 1 << 17

seeds = st.integers(min_value=0, max_value=2**31 - 1)


@dataclass(frozen=True)
class ScanShape:
    """A selective_scan problem: u (batch, d, L), A (d, N), B/C laid out as `bc_layout`:
    "shared" (b, N, L), "grouped" (b, groups, N, L) or "invariant" (d, N)."""

    batch: int
    d: int
    d_state: int
    L: int
    bc_layout: str
    groups: int


@dataclass(frozen=True)
class SSDShape:
    """An ssd_scan problem: x (batch, L, nheads, headdim), B/C (batch, L, ngroups, d_state)."""

    batch: int
    L: int
    nheads: int
    headdim: int
    ngroups: int
    d_state: int
    chunk_size: int


@st.composite
def d_states(draw, max_value: int = 256) -> int:
    """d_state from 1 to 256, biased towards pruned sizes (odd, small) and the usual powers of two."""
    return draw(st.one_of(st.sampled_from([1, 5, 12, 16, 64, 100, 128, 256]), st.integers(1, max_value)))


@st.composite
def scan_shapes(draw, max_L: int = 2048, work: int = WORK) -> ScanShape:
    batch = draw(st.integers(1, 2))
    bc_layout = draw(st.sampled_from(["shared", "grouped", "invariant"]))
    groups = draw(st.sampled_from([1, 2, 3])) if bc_layout == "grouped" else 1
    d = groups * draw(st.integers(1, 4))
    d_state = draw(d_states())
    # L is drawn last and long only where batch * d * d_state leaves room for it in the work budget.
    max_L = max(1, min(max_L, work // (batch * d * d_state)))
    L = draw(st.integers(1, max_L))
    return ScanShape(batch, d, d_state, L, bc_layout, groups)


@st.composite
def ssd_shapes(draw, max_L: int = 1024, work: int = WORK) -> SSDShape:
    batch = draw(st.integers(1, 2))
    ngroups = draw(st.sampled_from([1, 2]))
    nheads = ngroups * draw(st.integers(1, 3))
    headdim = draw(st.sampled_from([1, 2, 4, 8]))
    d_state = draw(d_states())
    max_L = max(1, min(max_L, work // (batch * nheads * headdim * d_state)))
    L = draw(st.integers(1, max_L))
    # chunk sizes that do not divide L are the point: they exercise the padding of the last chunk
    chunk_size = draw(st.sampled_from([1, 3, 8, 16, 64, 256]))
    return SSDShape(batch, L, nheads, headdim, ngroups, d_state, chunk_size)


@st.composite
def conv_shapes(draw) -> tuple[int, int, int, int]:
    """(batch, d, L, width) for the depthwise causal conv1d; widths 2-4 as the CUDA kernel supports, plus 1."""
    return draw(st.integers(1, 2)), draw(st.integers(1, 8)), draw(st.integers(1, 64)), draw(st.integers(1, 4))


@st.composite
def norm_shapes(draw) -> tuple[tuple[int, ...], int]:
    """(leading dims, group_size) with the last dim = group_size * groups."""
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    group_size = draw(st.integers(1, 16))
    return (*lead, group_size * draw(st.integers(1, 4))), group_size
