"""Hypothesis strategies and helpers for the pruning tests: tiny model configs of both versions.

(Not named strategies.py: tests/ has no __init__.py files, so that name would shadow tests/strategies.py.)
Configs are small enough that building, calibrating and pruning one takes milliseconds on a CPU.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from perfmamba.models import ModelConfig, build_model
from perfmamba.pruning import criteria_for

VOCAB = 40

TINY = {
    1: ModelConfig(version=1, d_model=16, n_layer=2, vocab_size=VOCAB, d_state=8),
    2: ModelConfig(version=2, d_model=16, n_layer=2, vocab_size=VOCAB, pad_vocab_size_multiple=16, d_state=16,
                   headdim=8, ngroups=2, chunk_size=8),
}

seeds = st.integers(0, 2**31 - 1)
ratios = st.floats(0.0, 0.9, allow_nan=False).map(lambda r: round(r, 3))
allocations = st.sampled_from(["uniform", "global"])


@st.composite
def tiny_configs(draw, version: int | None = None) -> ModelConfig:
    """A tiny Mamba-1 or Mamba-2 config, sometimes already pruned (per-layer d_state)."""
    version = draw(st.sampled_from([1, 2])) if version is None else version
    n_layer = draw(st.integers(1, 3))
    d_conv = draw(st.sampled_from([2, 3, 4]))
    if version == 1:
        d_model = draw(st.sampled_from([8, 16]))
        d_state = draw(st.integers(2, 12))
        extra = {}
    else:
        d_model = 16
        headdim = draw(st.sampled_from([4, 8, 16]))
        nheads = 2 * d_model // headdim
        ngroups = draw(st.sampled_from([g for g in (1, 2, 4) if nheads % g == 0]))
        d_state = draw(st.integers(2, 16))
        extra = {"headdim": headdim, "ngroups": ngroups, "chunk_size": draw(st.sampled_from([4, 8, 16])),
                 "pad_vocab_size_multiple": 16}
    layer_d_state = None
    if draw(st.booleans()):
        layer_d_state = tuple(draw(st.integers(2, d_state)) for _ in range(n_layer))
    return ModelConfig(version=version, d_model=d_model, n_layer=n_layer, vocab_size=VOCAB, d_state=d_state,
                       d_conv=d_conv, layer_d_state=layer_d_state, **extra)


@st.composite
def criteria(draw, version: int) -> str:
    return draw(st.sampled_from(criteria_for(version)))


def tokens(seed: int, batch: int = 3, length: int = 21, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def model_and_tokens(config: ModelConfig, seed: int):
    return build_model(config, seed=seed % 1000).eval(), tokens(seed)
