"""The reference depthwise causal conv1d against its definition, and its decode update against the full conv."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import conv_shapes, seeds

from perfmamba import ops


def conv64(x, weight, bias=None, activation=None):
    """out[:, c, t] = bias[c] + sum_k weight[c, k] * x[:, c, t - (w - 1) + k], x = 0 before the start."""
    x, weight = x.double(), weight.double()
    b, d, L = x.shape
    w = weight.shape[1]
    out = torch.zeros(b, d, L, dtype=torch.float64)
    for t in range(L):
        for k in range(w):
            s = t - (w - 1) + k
            if s >= 0:
                out[:, :, t] += weight[:, k] * x[:, :, s]
    if bias is not None:
        out += bias.double()[:, None]
    return F.silu(out) if activation in ("silu", "swish") else out


def make(b, d, L, w, seed, bias=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, L, generator=g).to(dtype)
    weight = torch.randn(d, w, generator=g).to(dtype)
    return x, weight, torch.randn(d, generator=g).to(dtype) if bias else None


@settings(max_examples=30, deadline=None)
@given(shape=conv_shapes(), seed=seeds, bias=st.booleans(), activation=st.sampled_from([None, "silu", "swish"]))
def test_reference_matches_definition(shape, seed, bias, activation):
    x, weight, b = make(*shape, seed, bias)
    out = ops.causal_conv1d(x, weight, b, activation, backend="reference")
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out.double(), conv64(x, weight, b, activation), rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(shape=conv_shapes(), seed=seeds, bias=st.booleans(), activation=st.sampled_from([None, "silu"]),
       extra=st.integers(0, 2), channel_last=st.booleans())
def test_update_steps_match_full_conv(shape, seed, bias, activation, extra, channel_last):
    """Stepping from a zero state reproduces the full conv; the state keeps the last state_len inputs.
    state_len may be width - 1, width or width + 1; the state may be a channel-last view, as models allocate it."""
    bsz, d, L, w = shape
    state_len = max(1, w - 1 + extra)
    x, weight, b = make(bsz, d, L, w, seed, bias)
    want = ops.causal_conv1d(x, weight, b, activation, backend="reference")
    state = torch.zeros(bsz, state_len, d).transpose(1, 2) if channel_last else torch.zeros(bsz, d, state_len)
    for t in range(L):
        out = ops.causal_conv1d_update(x[:, :, t], state, weight, b, activation, backend="reference")
        assert out.shape == (bsz, d)
        torch.testing.assert_close(out, want[:, :, t], rtol=1e-5, atol=1e-5)
    history = F.pad(x, (state_len, 0))[:, :, -state_len:]
    torch.testing.assert_close(state, history, rtol=0, atol=0)


def test_update_takes_several_steps_at_once():
    x, weight, b = make(2, 3, 7, 4, seed=1)
    want = ops.causal_conv1d(x, weight, b, "silu", backend="reference")
    state = torch.zeros(2, 3, 4)
    first = ops.causal_conv1d_update(x[:, :, :3], state, weight, b, "silu", backend="reference")
    rest = ops.causal_conv1d_update(x[:, :, 3:], state, weight, b, "silu", backend="reference")
    torch.testing.assert_close(torch.cat([first, rest], dim=-1), want, rtol=1e-5, atol=1e-5)


def test_bf16_in_bf16_out():
    x, weight, b = make(1, 4, 9, 4, seed=0, dtype=torch.bfloat16)
    out = ops.causal_conv1d(x, weight, b, "silu", backend="reference")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), conv64(x, weight, b, "silu"), rtol=1e-2, atol=1e-2)


def test_rejects_bad_arguments():
    x, weight, b = make(1, 4, 9, 4, seed=0)
    with pytest.raises(ValueError, match="activation must be one of"):
        ops.causal_conv1d(x, weight, b, "relu", backend="reference")
    with pytest.raises(ValueError, match="channels"):
        ops.causal_conv1d(x[:, :3], weight, b, backend="reference")
    with pytest.raises(ValueError, match="at least width - 1"):
        ops.causal_conv1d_update(x[:, :, 0], torch.zeros(1, 4, 2), weight, b, backend="reference")
