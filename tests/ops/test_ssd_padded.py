"""Zero-padding the state dimension (perfmamba.ops.ssd_padded) leaves the SSD results unchanged: checked on the
references, whose arithmetic is the kernels' up to rounding."""

from __future__ import annotations

import pytest
import torch

from perfmamba.ops.fused import mamba_split_conv1d_scan_ref
from perfmamba.ops.ssd import ssd_scan_ref
from perfmamba.ops.ssd_padded import pad_split_conv1d_scan, pad_ssd_scan, padded


def test_padded_sizes():
    assert [padded(n) for n in (1, 16, 17, 116, 128)] == [16, 16, 32, 128, 128]
    assert padded(116, 128) == 128 and padded(96, 32) == 96
    with pytest.raises(ValueError, match="d_state=0"):
        padded(0)


@pytest.mark.parametrize("dstate", [5, 16, 37])
def test_padding_does_not_change_ssd_scan(dstate):
    g = torch.Generator().manual_seed(dstate)
    b, L, h, p, groups = 2, 40, 4, 8, 2
    x, z = torch.randn(b, L, h, p, generator=g), torch.randn(b, L, h, p, generator=g)
    dt = torch.randn(b, L, h, generator=g) * 0.5 - 2
    A = -torch.exp(torch.rand(h, generator=g))
    B, C = torch.randn(b, L, groups, dstate, generator=g), torch.randn(b, L, groups, dstate, generator=g)
    kwargs = dict(D=torch.randn(h, generator=g), z=z, dt_bias=torch.randn(h, generator=g) * 0.1, dt_softplus=True,
                  initial_states=torch.randn(b, h, p, dstate, generator=g), return_final_states=True)
    want_y, want_state = ssd_scan_ref(x, dt, A, B, C, 16, **kwargs)
    got_y, got_state = pad_ssd_scan(ssd_scan_ref, multiple=32)(x, dt, A, B, C, 16, **kwargs)
    assert got_state.shape == want_state.shape
    torch.testing.assert_close(got_y, want_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_state, want_state, rtol=1e-5, atol=1e-5)


def _ref_without_state_dtype(*args):
    return mamba_split_conv1d_scan_ref(*args[:-1])  # the reference has no state_dtype (the kernel's storage type)


@pytest.mark.parametrize("dstate", [5, 36])
def test_padding_does_not_change_the_fused_mamba2_op(dstate):
    g = torch.Generator().manual_seed(dstate)
    b, L, h, p, groups, d_mlp = 2, 24, 4, 8, 2, 3
    dim = h * p
    channels = dim + 2 * groups * dstate
    zxbcdt = torch.randn(b, L, 2 * d_mlp + 2 * dim + 2 * groups * dstate + h, generator=g)
    weight, bias = torch.randn(channels, 4, generator=g) * 0.3, torch.randn(channels, generator=g) * 0.1
    dt_bias, D = torch.randn(h, generator=g) * 0.1, torch.randn(h, generator=g)
    A = -torch.exp(torch.rand(h, generator=g))
    args = (zxbcdt, weight, bias, dt_bias, A, D, 8, torch.randn(b, h, p, dstate, generator=g), None,
            (0.0, float("inf")), True, "silu", torch.rand(dim, generator=g) + 0.5, 1e-6,
            torch.randn(16, dim + d_mlp, generator=g), None, p, groups, False, None)
    want_y, want_state = _ref_without_state_dtype(*args)
    got_y, got_state = pad_split_conv1d_scan(_ref_without_state_dtype)(*args)
    torch.testing.assert_close(got_y, want_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_state, want_state, rtol=1e-5, atol=1e-5)
