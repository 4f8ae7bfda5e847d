"""Allocation: the counts each allocation promises, legal multiples, and kept indices in their original order."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmamba.models import ModelConfig
from perfmamba.pruning import PruneConfig, allocate
from perfmamba.pruning.allocation import global_counts
from perfmamba.pruning.config import kept_count, legal_multiple, resolve_multiple


def scores_strategy():
    layer = st.tuples(st.integers(1, 3), st.integers(1, 24))  # (ngroups, N)
    return st.tuples(st.lists(layer, min_size=1, max_size=5), st.integers(0, 2**31 - 1))


def make_scores(shapes, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(g, n, generator=gen, dtype=torch.float64) for g, n in shapes]


def check_indices(kept, scores, counts):
    for k, s, c in zip(kept, scores, counts):
        assert k.shape == (s.shape[0], c)
        assert (k[:, 1:] > k[:, :-1]).all(), "kept indices keep their original order"
        assert k.min() >= 0 and k.max() < s.shape[1]
        for g in range(s.shape[0]):  # each group keeps its own best states
            dropped = [n for n in range(s.shape[1]) if n not in set(k[g].tolist())]
            if dropped and c:
                assert s[g, k[g]].min() >= s[g, dropped].max()


def test_kept_count_is_the_papers_floor_rounded_up_to_the_multiple():
    assert kept_count(16, 0.3) == 11  # floor(16 * 0.7) = floor(11.2)
    assert kept_count(10, 0.9) == 1  # 10 * (1 - 0.9) = 0.9999999999999998 in floating point
    assert kept_count(128, 0.3, multiple=4) == 92  # 89 -> 92
    assert kept_count(128, 0.3, multiple=32) == 96
    assert kept_count(128, 0.0, multiple=32) == 128
    assert kept_count(100, 0.01, multiple=8) == 100  # never above d_state
    assert kept_count(128, 0.3, multiple="pow2") == 64
    assert kept_count(128, 0.5, multiple="pow2") == 64
    assert kept_count(128, 0.49, multiple="pow2") == 64
    assert kept_count(16, 0.9, multiple=4) == 4
    assert kept_count(16, 0.85, multiple="pow2") == 2  # floor(2.4) = 2, a power of two already
    assert kept_count(16, 0.85, multiple="pow2", legal=4) == 4  # but Mamba-2 (ngroups 1) needs N' % 4 == 0
    zero = r"keeps floor\(16 \* \(1 - 0.95\)\) = 0 states of d_state=16.*ratio <= 0.9375"
    with pytest.raises(ValueError, match=zero):
        kept_count(16, 0.95)
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\), got 1.2"):
        kept_count(16, 1.2)


def test_legal_multiples():
    cfg = ModelConfig(version=2, d_model=64, n_layer=1, d_state=128, headdim=16)
    assert legal_multiple(cfg) == 4
    assert legal_multiple(cfg.replace(ngroups=2)) == 2
    assert legal_multiple(cfg.replace(ngroups=8)) == 1
    assert legal_multiple(ModelConfig(version=1)) == 1
    assert resolve_multiple(None, cfg) == 4 and resolve_multiple(16, cfg) == 16 and resolve_multiple("pow2", cfg)
    with pytest.raises(ValueError, match="multiple=2 allows d_state values that mamba-ssm's fused Mamba-2"):
        resolve_multiple(2, cfg)


@settings(max_examples=40, deadline=None)
@given(scores_strategy(), st.floats(0.0, 0.95), st.sampled_from([1, 2, 4]))
def test_uniform_counts(shapes_seed, ratio, multiple):
    scores = make_scores(*shapes_seed)
    try:
        want = [kept_count(s.shape[1], ratio, multiple) for s in scores]
    except ValueError:
        with pytest.raises(ValueError, match="layer .*states of d_state"):
            allocate(scores, ratio, "uniform", multiple=multiple)
        return
    kept = allocate(scores, ratio, "uniform", multiple=multiple)
    check_indices(kept, scores, want)
    for s, k in zip(scores, want):
        n = s.shape[1]
        floor = math.floor(n * (1 - ratio) + 1e-9)
        assert k == n or (k % multiple == 0 and floor <= k < floor + multiple)


@settings(max_examples=60, deadline=None)
@given(scores_strategy(), st.floats(0.0, 0.95), st.sampled_from([1, 2, 4]), st.integers(1, 3))
def test_global_counts(shapes_seed, ratio, multiple, min_states):
    scores = make_scores(*shapes_seed)
    sizes = [s.shape[1] for s in scores]
    budget = math.floor(sum(sizes) * (1 - ratio) + 1e-9)
    floor = [min(n, multiple * math.ceil(min_states / multiple)) for n in sizes]
    if sum(floor) > budget:
        with pytest.raises(ValueError, match="fewer than the .* that min_states"):
            allocate(scores, ratio, "global", multiple=multiple, min_states=min_states)
        return
    kept = allocate(scores, ratio, "global", multiple=multiple, min_states=min_states)
    counts = [k.shape[1] for k in kept]
    check_indices(kept, scores, counts)
    assert sum(counts) <= budget
    for c, n, f in zip(counts, sizes, floor):
        assert f <= c <= n
        assert c == n or c % multiple == 0
    # Nothing of a whole block left unspent unless no layer had a block of that size left.
    if multiple == 1:
        assert sum(counts) == budget


def test_global_moves_states_to_the_layer_that_needs_them():
    # Layer 0: one dominant state. Layer 1: flat. LAMP-normalised, layer 1's states outrank layer 0's tail.
    peaked = torch.tensor([[100.0, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3]], dtype=torch.float64)
    flat = torch.ones(1, 8, dtype=torch.float64) + torch.linspace(0, 1e-3, 8)
    kept = allocate([peaked, flat], 0.5, "global")
    assert [k.shape[1] for k in kept] == [1, 7]
    assert kept[0].tolist() == [[0]]
    assert global_counts([peaked, flat], 0.0) == [8, 8]
    uniform = allocate([peaked, flat], 0.5, "uniform")
    assert [k.shape[1] for k in uniform] == [4, 4]


def test_groups_keep_their_own_states():
    s = torch.tensor([[9.0, 1, 8, 2], [1, 9, 2, 8]], dtype=torch.float64)
    kept = allocate([s], 0.5)
    assert kept[0].tolist() == [[0, 2], [1, 3]]


def test_allocation_errors():
    s = [torch.rand(1, 4, dtype=torch.float64)]
    with pytest.raises(ValueError, match="allocation must be one of \\('uniform', 'global'\\), got 'adaptive'"):
        allocate(s, 0.5, "adaptive")
    with pytest.raises(ValueError, match="pow2"):
        allocate(s, 0.5, "global", multiple="pow2")
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\), got -0.1"):
        allocate(s, -0.1)
    with pytest.raises(ValueError, match="ratio 0.9 keeps floor\\(8 \\* \\(1 - 0.9\\)\\) = 0 states in all"):
        allocate(s + s, 0.9, "global")
    with pytest.raises(ValueError, match="min_states must be an integer >= 1"):
        PruneConfig(ratio=0.5, min_states=0)
    with pytest.raises(ValueError, match="unknown criterion 'taylor'"):
        PruneConfig(ratio=0.5, criterion="taylor")
    with pytest.raises(ValueError, match="mode must be one of \\('remove', 'mask'\\), got 'zero'"):
        PruneConfig(ratio=0.5, mode="zero")
    with pytest.raises(ValueError, match="ratio must be in \\[0, 1\\), got 1"):
        PruneConfig(ratio=1)
