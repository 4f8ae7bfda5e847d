"""Allocation: which states each layer keeps, given per-layer scores (ngroups, N) and a ratio.

- uniform: every layer keeps k = floor(N (1 - r)) states (the PerfMamba paper's), rounded to `multiple`.
- global: layer-adaptive, as LAST (Gwak et al. 2024). Scores are normalised per layer the way LAMP normalises
  weights: with v_1 >= v_2 >= ... a layer's sorted scores, state j scores v_j / (v_1 + ... + v_j), the share of
  the energy still kept that it would take with it. Normalised scores compare across layers (every layer's best
  state scores 1); the model keeps its floor(sum_l N_l (1 - r)) best, at least `min_states` per layer.

Mamba-2 shares states across the heads of a group: every group of a layer keeps the same count (the layer's
d_state), each group its own best states. Global allocation ranks a layer's j-th states by the mean over groups
of each group's j-th best score, and in blocks of `multiple` states so that every count stays legal.
Kept indices are sorted: pruned states keep their original order.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from perfmamba.pruning.config import _EPS, _kept_count, check_allocation


def top_states(scores: Tensor, k: int) -> Tensor:
    """The `k` best states of each group, (ngroups, k) sorted ascending; ties go to the lower index."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return order.sort(dim=1).values


def lamp_normalize(values: Tensor) -> Tensor:
    """v_j / (v_1 + ... + v_j) of scores sorted descending (0 where that sum is 0)."""
    cum = values.cumsum(0)
    return torch.where(cum > 0, values / cum.clamp_min(torch.finfo(values.dtype).tiny), torch.zeros_like(values))


def global_counts(scores: list[Tensor], ratio: float, min_states: int = 1, multiple: int = 1) -> list[int]:
    """States per layer under global (layer-adaptive) allocation; see the module docstring."""
    sizes = [s.shape[1] for s in scores]
    total = sum(sizes)
    budget = math.floor(total * (1.0 - ratio) + _EPS)
    counts = [min(n, multiple * math.ceil(min_states / multiple)) for n in sizes]
    if sum(counts) > budget:
        raise ValueError(
            f"ratio {ratio} keeps floor({total} * (1 - {ratio})) = {budget} states in all, fewer than the "
            f"{sum(counts)} that min_states={min_states} (multiple={multiple}) needs in {len(sizes)} layers; "
            f"use a ratio <= {1 - sum(counts) / total:.6g} or a lower min_states"
        )
    values, layer_of, start_of, size_of = [], [], [], []
    for layer, s in enumerate(scores):
        slots = lamp_normalize(torch.sort(s.double(), dim=1, descending=True, stable=True).values.mean(0))
        for start in range(counts[layer], sizes[layer], multiple):
            block = slots[start : start + multiple]
            values.append(float(block.mean()))
            layer_of.append(layer)
            start_of.append(start)
            size_of.append(len(block))
    order = torch.sort(torch.tensor(values, dtype=torch.float64), descending=True, stable=True).indices.tolist()
    used, closed = sum(counts), set()
    for i in order:
        layer = layer_of[i]
        if layer in closed:
            continue
        if used + size_of[i] > budget:
            closed.add(layer)  # a layer's blocks are taken in order, so none after this one either
            continue
        assert start_of[i] == counts[layer], "blocks of a layer must be taken in order"
        counts[layer] += size_of[i]
        used += size_of[i]
    return counts


def allocate(
    scores: list[Tensor],
    ratio: float,
    allocation: str = "uniform",
    *,
    min_states: int = 1,
    multiple: int | str = 1,
    legal: int = 1,
) -> list[Tensor]:
    """Kept state indices per layer, (ngroups, k_l) long sorted, from per-layer scores (ngroups, N_l).
    `legal`: the kernels' smallest multiple (`legal_multiple`), the floor of "pow2" rounding."""
    check_allocation(ratio, allocation, multiple, min_states)
    if not scores:
        raise ValueError("no layers to allocate states to (empty score list)")
    for i, s in enumerate(scores):
        if s.dim() != 2 or s.shape[0] < 1 or s.shape[1] < 1:
            raise ValueError(f"scores of layer {i} must be (ngroups, N) with N >= 1, got shape {tuple(s.shape)}")
    if allocation == "uniform":
        counts = []
        for i, s in enumerate(scores):
            try:
                counts.append(_kept_count(s.shape[1], ratio, multiple, min_states, legal))
            except ValueError as e:
                raise ValueError(f"layer {i}: {e}") from None
    else:
        counts = global_counts(scores, ratio, min_states, int(multiple))
    return [top_states(s, k) for s, k in zip(scores, counts)]
