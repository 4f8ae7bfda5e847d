"""The CUDA backends (mamba-ssm / causal-conv1d kernels) against the references, on a GPU.

Inputs follow the kernels' dtype rules, as mamba-ssm's modules call them: A, D and the dt biases are fp32,
activations in the run dtype. Pruned d_state values (odd, small) are the point: a pruned model runs on the
unmodified kernels, so they must agree with the reference there too.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from perfmamba import ops

pytestmark = [pytest.mark.gpu, pytest.mark.mamba_ssm]

TOL = {torch.float32: dict(rtol=6e-4, atol=2e-3), torch.bfloat16: dict(rtol=3e-2, atol=5e-2)}
# mamba-ssm's Triton SSD kernels multiply fp32 operands in TF32 (10-bit mantissa): their fp32 results agree with
# an fp32 reference to ~1.5e-3 in norm (measured on an H100 at N=32..128), not to fp32 rounding. These bound the
# error relative to the output's norm, and the worst element relative to (RMS of the output + its own size).
SSD_TOL = {torch.float32: dict(norm=5e-3, worst=2e-2), torch.bfloat16: dict(norm=2e-2, worst=5e-2)}
DTYPES = [torch.float32, torch.bfloat16]
DEV = "cuda"


def close(got, want, dtype, msg=""):
    assert got.dtype == want.dtype, f"{msg}: dtype {got.dtype} != {want.dtype}"
    torch.testing.assert_close(got, want, **TOL[dtype], msg=lambda m: f"{msg}\n{m}")


def close_ssd(got, want, dtype, msg=""):
    """Closeness for outputs of the SSD Triton kernels (see SSD_TOL)."""
    assert got.dtype == want.dtype, f"{msg}: dtype {got.dtype} != {want.dtype}"
    diff = (got.double() - want.double()).abs()
    norm = (diff.norm() / want.double().norm()).item()
    worst = (diff / (want.double().pow(2).mean().sqrt() + want.double().abs())).max().item()
    print(f"{msg} {dtype}: norm {norm:.2e} worst {worst:.2e}")
    tol = SSD_TOL[dtype]
    assert norm < tol["norm"] and worst < tol["worst"], f"{msg}: relative error {norm:.2e}, worst element {worst:.2e}"


def require(op: str) -> None:
    status = ops.backend_status()[op]["cuda"]
    if status != "available":
        pytest.skip(f"cuda backend of {op}: {status}")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator(device=DEV).manual_seed(seed)


def randn(g, *shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape, generator=g, device=DEV) * scale).to(dtype)


def test_auto_picks_cuda_for_cuda_tensors_and_reference_for_cpu():
    require("selective_scan")
    assert ops.resolve("selective_scan", "auto", torch.zeros(1, device=DEV))[0] == "cuda"
    assert ops.resolve("selective_scan", "auto", torch.zeros(1))[0] == "reference"
    with pytest.raises(ops.BackendUnavailableError, match="needs CUDA tensors"):
        ops.resolve("selective_scan", "cuda", torch.zeros(1))


# --- Mamba-1 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d_state", [16, 12, 8, 5, 1])
@pytest.mark.parametrize("bc", ["shared", "grouped", "invariant"])
def test_selective_scan(dtype, d_state, bc):
    require("selective_scan")
    g = gen(d_state)
    b, d, L = 2, 96, 300
    u, z = randn(g, b, d, L, dtype=dtype), randn(g, b, d, L, dtype=dtype)
    delta = randn(g, b, d, L, dtype=dtype, scale=0.5) - 2.0
    A = -torch.exp(torch.rand(d, d_state, generator=g, device=DEV) * 3 - 1)
    if bc == "shared":
        B, C = randn(g, b, d_state, L, dtype=dtype), randn(g, b, d_state, L, dtype=dtype)
    elif bc == "grouped":
        B, C = randn(g, b, 3, d_state, L, dtype=dtype), randn(g, b, 3, d_state, L, dtype=dtype)
    else:  # time-invariant B/C are weights: fp32 in the kernel
        B, C = randn(g, d, d_state), randn(g, d, d_state)
    D, bias = randn(g, d), randn(g, d, scale=0.1)
    for kwargs in (dict(D=D, z=z, delta_bias=bias, delta_softplus=True), dict()):
        args = (u, delta.abs() if not kwargs else delta, A, B, C)
        y, last = ops.selective_scan(*args, **kwargs, return_last_state=True, backend="cuda")
        y_ref, last_ref = ops.selective_scan(*args, **kwargs, return_last_state=True, backend="reference")
        close(y, y_ref, dtype, f"y {kwargs.keys()}")
        close(last, last_ref, dtype, "last_state")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d_state", [16, 5, 1])
@pytest.mark.parametrize("with_optionals", [True, False])
def test_selective_state_update_mamba1(dtype, d_state, with_optionals):
    require("selective_state_update")
    g = gen(1)
    b, d = 3, 80
    state = randn(g, b, d, d_state, dtype=dtype)
    x, dt, z = randn(g, b, d, dtype=dtype), randn(g, b, d, dtype=dtype, scale=0.5) - 2, randn(g, b, d, dtype=dtype)
    A = -torch.exp(torch.rand(d, d_state, generator=g, device=DEV))
    B, C = randn(g, b, d_state, dtype=dtype), randn(g, b, d_state, dtype=dtype)
    # without dt_bias/D the cuda path must stand in zeros: mamba-ssm's kernel dereferences both
    kwargs = dict(D=randn(g, d), z=z, dt_bias=randn(g, d, scale=0.1)) if with_optionals else {}
    state_ref = state.clone()
    out = ops.selective_state_update(state, x, dt, A, B, C, **kwargs, dt_softplus=True, backend="cuda")
    ref = ops.selective_state_update(state_ref, x, dt, A, B, C, **kwargs, dt_softplus=True, backend="reference")
    close(out, ref, dtype, "out")
    close(state, state_ref, dtype, "state")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d_state", [128, 100, 32])
@pytest.mark.parametrize("tied", [True, False])
def test_selective_state_update_mamba2(dtype, d_state, tied):
    """Mamba-2 decode: per-head parameters expanded over (headdim, d_state) with stride 0, as the models pass
    them (the kernel's tied fast path), or full per-channel tensors."""
    require("selective_state_update")
    g = gen(2)
    b, h, p, ngroups = 2, 8, 64, 2
    state = randn(g, b, h, p, d_state, dtype=dtype)
    x, z = randn(g, b, h, p, dtype=dtype), randn(g, b, h, p, dtype=dtype)
    B, C = randn(g, b, ngroups, d_state, dtype=dtype), randn(g, b, ngroups, d_state, dtype=dtype)
    if tied:
        dt = (randn(g, b, h, dtype=dtype, scale=0.5) - 2)[..., None].expand(-1, -1, p)
        A = -torch.exp(torch.rand(h, generator=g, device=DEV))[:, None, None].expand(-1, p, d_state)
        D, bias = randn(g, h)[:, None].expand(-1, p), randn(g, h, scale=0.1)[:, None].expand(-1, p)
    else:
        dt = randn(g, b, h, p, dtype=dtype, scale=0.5) - 2
        A = -torch.exp(torch.rand(h, p, d_state, generator=g, device=DEV))
        D, bias = randn(g, h, p), randn(g, h, p, scale=0.1)
    state_ref = state.clone()
    out = ops.selective_state_update(state, x, dt, A, B, C, D, z, bias, True, backend="cuda")
    ref = ops.selective_state_update(state_ref, x, dt, A, B, C, D, z, bias, True, backend="reference")
    close(out, ref, dtype, "out")
    close(state, state_ref, dtype, "state")


# --- Mamba-2 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d_state", [128, 100, 64, 32])
def test_ssd_scan(dtype, d_state):
    require("ssd_scan")
    g = gen(d_state)
    # one shape per (d_state, dtype): each is a fresh Triton autotuning run (~20 s); L = 700 is no multiple
    # of the chunk, so the last chunk is partial
    b, L, h, p, ngroups, chunk_size = 2, 700, 8, 64, 2, 256
    x, z = randn(g, b, L, h, p, dtype=dtype), randn(g, b, L, h, p, dtype=dtype)
    dt = randn(g, b, L, h, dtype=dtype, scale=0.5) - 2
    A = -torch.exp(torch.rand(h, generator=g, device=DEV) * 3 - 1)
    B, C = randn(g, b, L, ngroups, d_state, dtype=dtype), randn(g, b, L, ngroups, d_state, dtype=dtype)
    cases = {
        "plain": dict(),
        "full": dict(D=randn(g, h), z=z, dt_bias=randn(g, h, scale=0.1), dt_softplus=True,
                     initial_states=randn(g, b, h, p, d_state)),
        "D per channel, limit": dict(D=randn(g, h, p), dt_bias=randn(g, h, scale=0.1), dt_softplus=True,
                                     dt_limit=(0.05, 0.2)),
    }
    for name, kwargs in cases.items():
        dt_in = dt if kwargs.get("dt_softplus") else F.softplus(dt.float()).to(dtype)
        y, final = ops.ssd_scan(x, dt_in, A, B, C, chunk_size, **kwargs, return_final_states=True, backend="cuda")
        y_ref, final_ref = ops.ssd_scan(x, dt_in, A, B, C, chunk_size, **kwargs, return_final_states=True,
                                        backend="reference")
        close_ssd(y, y_ref, dtype, f"y ({name})")
        close_ssd(final, final_ref, dtype, f"final_states ({name})")


@pytest.mark.parametrize("dtype", DTYPES)
def test_ssd_scan_seq_idx(dtype):
    require("ssd_scan")
    g = gen(7)
    b, L, h, p, N, chunk = 2, 500, 8, 64, 64, 256
    x = randn(g, b, L, h, p, dtype=dtype)
    dt = randn(g, b, L, h, dtype=dtype, scale=0.5) - 2
    A = -torch.exp(torch.rand(h, generator=g, device=DEV))
    B, C = randn(g, b, L, 1, N, dtype=dtype), randn(g, b, L, 1, N, dtype=dtype)
    pos = torch.arange(L, device=DEV)
    seq_idx = torch.stack([(pos >= 100).int() + (pos >= 128).int() + (pos >= 333).int(), (pos >= 256).int()])
    kwargs = dict(D=randn(g, h), dt_softplus=True, initial_states=randn(g, b, h, p, N), seq_idx=seq_idx,
                  return_final_states=True)
    y, final = ops.ssd_scan(x, dt, A, B, C, chunk, **kwargs, backend="cuda")
    y_ref, final_ref = ops.ssd_scan(x, dt, A, B, C, chunk, **kwargs, backend="reference")
    close_ssd(y, y_ref, dtype, "y (seq_idx)")
    close_ssd(final, final_ref, dtype, "final_states (seq_idx)")


# --- conv and norms ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_causal_conv1d_and_update(dtype, width, activation):
    require("causal_conv1d")
    require("causal_conv1d_update")
    g = gen(width)
    b, d, L = 2, 192, 77
    x = randn(g, b, d, L, dtype=dtype)
    weight, bias = randn(g, d, width, dtype=dtype, scale=0.5), randn(g, d, dtype=dtype)
    close(ops.causal_conv1d(x, weight, bias, activation, backend="cuda"),
          ops.causal_conv1d(x, weight, bias, activation, backend="reference"), dtype, "conv")
    for channel_last in (False, True):
        if channel_last:  # how mamba-ssm's Mamba2 allocates its conv state
            state = randn(g, b, width, d, dtype=dtype).transpose(1, 2)
        else:
            state = randn(g, b, d, width, dtype=dtype)
        state_ref = state.clone()
        for t in range(3):
            out = ops.causal_conv1d_update(x[..., t], state, weight, bias, activation, backend="cuda")
            ref = ops.causal_conv1d_update(x[..., t], state_ref, weight, bias, activation, backend="reference")
            close(out, ref, dtype, f"update step {t} channel_last={channel_last}")
        close(state, state_ref, dtype, "conv_state")


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm(dtype):
    require("rms_norm")
    g = gen(3)
    x, weight = randn(g, 3, 17, 768, dtype=dtype), randn(g, 768, dtype=dtype)
    close(ops.rms_norm(x, weight, 1e-5, backend="cuda"), ops.rms_norm(x, weight, 1e-5, backend="reference"), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("residual", ["none", "fp32", "same"])
def test_add_rms_norm(dtype, residual):
    require("add_rms_norm")
    g = gen(5)
    x, weight = randn(g, 3, 17, 768, dtype=dtype), randn(g, 768, dtype=dtype)
    stream = None if residual == "none" else randn(g, 3, 17, 768, dtype=torch.float32 if residual == "fp32" else dtype)
    got = ops.add_rms_norm(x, stream, weight, 1e-5, residual_in_fp32=True, backend="cuda")
    want = ops.add_rms_norm(x, stream, weight, 1e-5, residual_in_fp32=True, backend="reference")
    close(got[0], want[0], dtype, "normalised")
    close(got[1], want[1], dtype if residual == "same" else torch.float32, "residual")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group_size", [None, 256])
@pytest.mark.parametrize("norm_before_gate", [False, True])
@pytest.mark.parametrize("gated", [True, False])
def test_rms_norm_gated(dtype, group_size, norm_before_gate, gated):
    require("rms_norm_gated")
    g = gen(4)
    x, weight = randn(g, 2, 33, 1024, dtype=dtype), randn(g, 1024, dtype=dtype)
    z = randn(g, 2, 33, 1024, dtype=dtype) if gated else None
    kwargs = dict(z=z, eps=1e-5, group_size=group_size, norm_before_gate=norm_before_gate)
    close(ops.rms_norm_gated(x, weight, **kwargs, backend="cuda"),
          ops.rms_norm_gated(x, weight, **kwargs, backend="reference"), dtype)


# --- fused paths -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d_state", [16, 5])
def test_mamba_inner(dtype, d_state):
    require("mamba_inner")
    g = gen(5)
    b, L, d_model, w = 2, 200, 64, 4
    d_inner, rank = 2 * d_model, 8
    args = (
        randn(g, b, 2 * d_inner, L, dtype=dtype),  # xz
        randn(g, d_inner, 1, w, dtype=dtype, scale=0.5), randn(g, d_inner, dtype=dtype),  # conv1d
        randn(g, rank + 2 * d_state, d_inner, dtype=dtype, scale=d_inner ** -0.5),  # x_proj
        randn(g, d_inner, rank, dtype=dtype, scale=rank ** -0.5),  # dt_proj
        randn(g, d_model, d_inner, dtype=dtype, scale=d_inner ** -0.5), None,  # out_proj
        -torch.exp(torch.rand(d_inner, d_state, generator=g, device=DEV) * 3 - 1),  # A
    )
    kwargs = dict(D=randn(g, d_inner), delta_bias=randn(g, d_inner, scale=0.1) - 3, delta_softplus=True)
    got = ops.mamba_inner(*args, **kwargs, backend="cuda")
    want = ops.mamba_inner_ref(*args, **kwargs)
    assert got.shape == (b, L, d_model)
    close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d_state, ngroups", [(64, 1), (100, 2)])
@pytest.mark.parametrize("gated_norm", [True, False])
def test_mamba_split_conv1d_scan(dtype, d_state, ngroups, gated_norm):
    require("mamba_split_conv1d_scan")
    g = gen(6)
    b, L, h, p, w, d_model, chunk = 2, 300, 8, 64, 4, 128, 256
    dim = h * p
    conv_dim = dim + 2 * ngroups * d_state
    zxbcdt = randn(g, b, L, 2 * dim + 2 * ngroups * d_state + h, dtype=dtype)
    args = (zxbcdt, randn(g, conv_dim, w, dtype=dtype, scale=0.5), randn(g, conv_dim, dtype=dtype),
            randn(g, h, scale=0.1) - 3, -torch.exp(torch.rand(h, generator=g, device=DEV)), randn(g, h), chunk)
    kwargs = dict(headdim=p, ngroups=ngroups, return_final_states=True, initial_states=randn(g, b, h, p, d_state))
    if gated_norm:
        kwargs.update(rmsnorm_weight=randn(g, dim, dtype=dtype), rmsnorm_eps=1e-5, norm_before_gate=False,
                      outproj_weight=randn(g, d_model, dim, dtype=dtype, scale=dim ** -0.5))
    got, final = ops.mamba_split_conv1d_scan(*args, **kwargs, backend="cuda")
    want, final_ref = ops.mamba_split_conv1d_scan_ref(*args, **kwargs)
    assert got.shape == (b, L, d_model if gated_norm else dim)
    close_ssd(got, want, dtype, "out (split_conv1d_scan)")
    close_ssd(final, final_ref, dtype, "final_states (split_conv1d_scan)")
