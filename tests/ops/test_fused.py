"""The fused ops: CUDA only (a clear error elsewhere); their composed references agree with the unfused ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from perfmamba import ops


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("op", [ops.mamba_inner, ops.mamba_split_conv1d_scan])
def test_fused_ops_refuse_cpu_with_a_pointer_to_the_unfused_path(op):
    with pytest.raises(ops.BackendUnavailableError, match="fused CUDA kernel with no reference backend.*unfused"):
        op(torch.zeros(1, 3, 8), *[None] * 7)


def test_split_conv1d_scan_ref_gated_norm_and_z_paths():
    """With rmsnorm_weight the gate goes through the grouped gated norm; without it, z gates the scan output.
    Both are checked against the unfused ops, and the SwiGLU channels (d_mlp) are prepended."""
    g = torch.Generator().manual_seed(0)
    b, L, h, p, ngroups, N, w, d_mlp = 2, 19, 4, 3, 2, 5, 4, 3
    dim, conv_dim = h * p, h * p + 2 * ngroups * N
    zxbcdt = torch.randn(b, L, 2 * d_mlp + 2 * dim + 2 * ngroups * N + h, generator=g)
    conv_w, conv_b = torch.randn(conv_dim, w, generator=g), torch.randn(conv_dim, generator=g)
    dt_bias, A, D = torch.randn(h, generator=g) * 0.1, -torch.rand(h, generator=g) - 0.5, torch.randn(h, generator=g)
    norm_w = torch.randn(dim, generator=g)

    zx0, z, xBC, dt = zxbcdt.split([2 * d_mlp, dim, conv_dim, h], dim=-1)
    xBC = ops.causal_conv1d(xBC.transpose(1, 2), conv_w, conv_b, "silu").transpose(1, 2)
    x, B, C = xBC.split([dim, ngroups * N, ngroups * N], dim=-1)
    scan = dict(x=x.unflatten(-1, (h, p)), dt=dt, A=A, B=B.unflatten(-1, (ngroups, N)),
                C=C.unflatten(-1, (ngroups, N)), chunk_size=8, D=D, dt_bias=dt_bias, dt_softplus=True)
    mlp = F.silu(zx0[..., :d_mlp]) * zx0[..., d_mlp:]

    y = ops.ssd_scan(**scan).flatten(-2)
    want = torch.cat([mlp, ops.rms_norm_gated(y, norm_w, z, 1e-6, group_size=dim // ngroups)], dim=-1)
    got = ops.mamba_split_conv1d_scan_ref(zxbcdt, conv_w, conv_b, dt_bias, A, D, 8, rmsnorm_weight=norm_w,
                                          headdim=p, ngroups=ngroups, norm_before_gate=False)
    torch.testing.assert_close(got, want)

    y, final = ops.ssd_scan(**scan, z=z.unflatten(-1, (h, p)), return_final_states=True)
    got, got_final = ops.mamba_split_conv1d_scan_ref(zxbcdt, conv_w, conv_b, dt_bias, A, D, 8, headdim=p,
                                                     ngroups=ngroups, return_final_states=True)
    torch.testing.assert_close(got, torch.cat([mlp, y.flatten(-2)], dim=-1))
    torch.testing.assert_close(got_final, final)


def test_mamba_inner_ref_matches_unfused_ops():
    g = torch.Generator().manual_seed(1)
    b, L, d_inner, N, rank, d_model, w = 2, 11, 6, 4, 2, 5, 4
    xz = torch.randn(b, 2 * d_inner, L, generator=g)
    conv_w, conv_b = torch.randn(d_inner, 1, w, generator=g), torch.randn(d_inner, generator=g)
    x_proj = torch.randn(rank + 2 * N, d_inner, generator=g)
    dt_proj, out_proj = torch.randn(d_inner, rank, generator=g), torch.randn(d_model, d_inner, generator=g)
    A, D, bias = -torch.rand(d_inner, N, generator=g), torch.randn(d_inner, generator=g), torch.randn(d_inner)

    x, z = xz.chunk(2, dim=1)
    u = ops.causal_conv1d(x, conv_w[:, 0], conv_b, "silu")
    dt_in, B, C = (u.transpose(1, 2) @ x_proj.T).split([rank, N, N], dim=-1)
    y = ops.selective_scan(u, (dt_in @ dt_proj.T).transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D,
                           z=z, delta_bias=bias, delta_softplus=True)
    want = y.transpose(1, 2) @ out_proj.T
    got = ops.mamba_inner_ref(xz, conv_w, conv_b, x_proj, dt_proj, out_proj, None, A, D=D, delta_bias=bias)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
