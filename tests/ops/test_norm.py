"""RMSNorm (alone and with the residual add) and Mamba-2's gated RMSNorm against their formulas, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import norm_shapes, seeds

from perfmamba import ops


def gated64(x, weight, z, eps, group_size, norm_before_gate):
    """Per group of group_size channels: g / sqrt(mean(g^2) + eps), g = x * silu(z) before the norm when
    norm_before_gate is False, else the norm of x times silu(z) after; times weight."""
    x, weight = x.double(), weight.double()
    gate = None if z is None else F.silu(z.double())
    if gate is not None and not norm_before_gate:
        x = x * gate
    groups = x.reshape(*x.shape[:-1], -1, group_size)
    out = (groups / torch.sqrt(groups.pow(2).mean(-1, keepdim=True) + eps)).reshape(x.shape) * weight
    return out * gate if gate is not None and norm_before_gate else out


@settings(max_examples=30, deadline=None)
@given(shape=norm_shapes(), seed=seeds, eps=st.sampled_from([1e-5, 1e-6, 0.1]))
def test_rms_norm_matches_formula(shape, seed, eps):
    dims, _ = shape
    g = torch.Generator().manual_seed(seed)
    x, weight = torch.randn(*dims, generator=g), torch.randn(dims[-1], generator=g)
    out = ops.rms_norm(x, weight, eps, backend="reference")
    want = x.double() / torch.sqrt(x.double().pow(2).mean(-1, keepdim=True) + eps) * weight.double()
    assert out.dtype == x.dtype
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(shape=norm_shapes(), seed=seeds, gated=st.booleans(), norm_before_gate=st.booleans(),
       whole=st.booleans())
def test_rms_norm_gated_matches_formula(shape, seed, gated, norm_before_gate, whole):
    dims, group_size = shape
    g = torch.Generator().manual_seed(seed)
    x, weight = torch.randn(*dims, generator=g), torch.randn(dims[-1], generator=g)
    z = torch.randn(*dims, generator=g) if gated else None
    out = ops.rms_norm_gated(x, weight, z, eps=1e-5, group_size=None if whole else group_size,
                             norm_before_gate=norm_before_gate, backend="reference")
    want = gated64(x, weight, z, 1e-5, dims[-1] if whole else group_size, norm_before_gate)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-6)


def test_gate_order_matters():
    """Guards against a swapped flag: the two orders differ whenever z is not constant."""
    g = torch.Generator().manual_seed(0)
    x, z, w = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g), torch.ones(8)
    before = ops.rms_norm_gated(x, w, z, norm_before_gate=True, backend="reference")
    after = ops.rms_norm_gated(x, w, z, norm_before_gate=False, backend="reference")
    torch.testing.assert_close(before, gated64(x, w, z, 1e-5, 8, True).float())
    assert (before - after).abs().max() > 0.1


@settings(max_examples=30, deadline=None)
@given(shape=norm_shapes(), seed=seeds, first=st.booleans())
def test_add_rms_norm_is_the_add_then_the_norm(shape, seed, first):
    dims, _ = shape
    g = torch.Generator().manual_seed(seed)
    x, residual = torch.randn(*dims, generator=g), torch.randn(*dims, generator=g)
    weight = torch.randn(dims[-1], generator=g)
    out, new_residual = ops.add_rms_norm(x, None if first else residual, weight, 1e-5, backend="reference")
    want = x.double() if first else x.double() + residual.double()
    torch.testing.assert_close(new_residual.double(), want, rtol=1e-6, atol=1e-6)
    normed = want / torch.sqrt(want.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.double()
    torch.testing.assert_close(out.double(), normed, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fp32_stream", [True, False])
def test_add_rms_norm_keeps_the_stream_dtype_and_normalises_the_unrounded_sum(fp32_stream):
    x = (torch.randn(4, 64) * 3).to(torch.bfloat16)
    out, stream = ops.add_rms_norm(x, None, torch.ones(64, dtype=torch.bfloat16), residual_in_fp32=fp32_stream,
                                   backend="reference")
    assert out.dtype == torch.bfloat16 and stream.dtype == (torch.float32 if fp32_stream else torch.bfloat16)
    out, stream = ops.add_rms_norm(x, stream, torch.ones(64, dtype=torch.bfloat16), backend="reference")
    assert stream.dtype == (torch.float32 if fp32_stream else torch.bfloat16)  # the given residual's dtype wins
    # as mamba-ssm's kernel: the norm of the fp32 sum, not of the sum rounded to the stream's dtype
    s = x.float() * 2
    torch.testing.assert_close(out, (s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + 1e-5)).to(torch.bfloat16))


def test_bf16_in_bf16_out():
    x = torch.randn(2, 16).to(torch.bfloat16)
    assert ops.rms_norm(x, torch.ones(16), backend="reference").dtype == torch.bfloat16
    assert ops.rms_norm_gated(x, torch.ones(16), x, group_size=8, backend="reference").dtype == torch.bfloat16


def test_rejects_group_size_not_dividing_channels():
    with pytest.raises(ValueError, match="multiple of group_size"):
        ops.rms_norm_gated(torch.zeros(2, 10), torch.ones(10), group_size=4, backend="reference")
