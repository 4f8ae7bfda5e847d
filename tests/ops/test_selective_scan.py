"""The reference selective scan and decode step against a float64 recurrence written out here, step by step."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import ScanShape, scan_shapes, seeds

from perfmamba import ops

SETTINGS = settings(max_examples=40, deadline=None)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30)).item()


def recurrence64(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, y_t = C_t . h_t + D u_t, y *= silu(z): in float64, one step
    at a time. Returns y (b, d, L) and the last state (b, d, N)."""
    u, delta, A = u.double(), delta.double(), A.double()
    b, d, L = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)

    def per_channel(X):  # -> (b, d, N, L)
        X = X.double()
        if X.dim() == 2:
            return X[None, :, :, None].expand(b, d, -1, L)
        if X.dim() == 3:
            return X[:, None].expand(b, d, -1, -1)
        return X.repeat_interleave(d // X.shape[1], dim=1)

    Bd, Cd = per_channel(B), per_channel(C)
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * Bd[..., t]
        ys.append((h * Cd[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(b, d, 0)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        y = y * F.silu(z.double())
    return y, h


def make_inputs(shape: ScanShape, seed: int, *, D=True, z=True, delta_bias=True, softplus=True, dtype=torch.float32):
    """Inputs in the ranges Mamba-1 produces: A = -exp(.) as in S4D-real init, small positive steps."""
    g = torch.Generator().manual_seed(seed)
    b, d, N, L = shape.batch, shape.d, shape.d_state, shape.L

    def randn(*s):
        return torch.randn(*s, generator=g)

    u = randn(b, d, L)
    if softplus:
        delta = randn(b, d, L) * 0.5 - 2.0
    else:
        delta = torch.rand(b, d, L, generator=g) * 0.2 + 0.01
    A = -torch.exp(torch.rand(d, N, generator=g) * 3 - 1)
    if shape.bc_layout == "shared":
        B, C = randn(b, N, L), randn(b, N, L)
    elif shape.bc_layout == "grouped":
        B, C = randn(b, shape.groups, N, L), randn(b, shape.groups, N, L)
    else:
        B, C = randn(d, N), randn(d, N)
    args = dict(
        u=u.to(dtype), delta=delta.to(dtype), A=A, B=B.to(dtype), C=C.to(dtype),
        D=randn(d) if D else None, z=randn(b, d, L).to(dtype) if z else None,
        # without softplus a positive bias keeps delta > 0: a negative step would grow the state without bound
        delta_bias=(randn(d) * 0.1 if softplus else torch.rand(d, generator=g) * 0.05) if delta_bias else None,
        delta_softplus=softplus,
    )
    return args


@SETTINGS
@given(shape=scan_shapes(), seed=seeds, flags=st.tuples(*[st.booleans()] * 4))
# the corners the random draw seldom reaches: the longest L, the largest d_state
@example(shape=ScanShape(1, 2, 1, 2048, "shared", 1), seed=0, flags=(True, True, True, True))
@example(shape=ScanShape(1, 1, 16, 2048, "invariant", 1), seed=1, flags=(False, False, False, False))
@example(shape=ScanShape(2, 4, 256, 64, "grouped", 2), seed=2, flags=(True, True, False, True))
def test_reference_matches_float64_recurrence(shape, seed, flags):
    D, z, delta_bias, softplus = flags
    args = make_inputs(shape, seed, D=D, z=z, delta_bias=delta_bias, softplus=softplus)
    y, last = ops.selective_scan(**args, return_last_state=True, backend="reference")
    want_y, want_last = recurrence64(**args)
    assert y.shape == (shape.batch, shape.d, shape.L) and y.dtype == torch.float32
    assert last.shape == (shape.batch, shape.d, shape.d_state) and last.dtype == torch.float32
    assert rel_err(y, want_y) < 1e-5
    assert rel_err(last, want_last) < 1e-5


def test_reference_spans_many_chunks(monkeypatch):
    """A sequence much longer than the time chunk, with a chunk size that does not divide it."""
    module = sys.modules["perfmamba.ops.selective_scan"]
    monkeypatch.setattr(module, "CHUNK", 7)
    args = make_inputs(ScanShape(2, 3, 4, 50, "grouped", 3), seed=1)
    y, last = ops.selective_scan(**args, return_last_state=True, backend="reference")
    want_y, want_last = recurrence64(**args)
    assert rel_err(y, want_y) < 1e-5 and rel_err(last, want_last) < 1e-5


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=scan_shapes(max_L=80, work=1 << 12), seed=seeds, flags=st.tuples(*[st.booleans()] * 4))
def test_reference_is_differentiable(shape, seed, flags, monkeypatch):
    """With gradients on, the scan runs out of place; values and gradients match the float64 recurrence."""
    monkeypatch.setattr(sys.modules["perfmamba.ops.selective_scan"], "CHUNK", 16)
    D, z, delta_bias, softplus = flags
    args = make_inputs(shape, seed, D=D, z=z, delta_bias=delta_bias, softplus=softplus)
    leaves = {k: v.requires_grad_() for k, v in args.items() if isinstance(v, torch.Tensor)}
    y, last = ops.selective_scan(**args, return_last_state=True, backend="reference")
    want_y, want_last = recurrence64(**args)
    assert rel_err(y, want_y) < 1e-5 and rel_err(last, want_last) < 1e-5
    g = torch.Generator().manual_seed(seed)
    w_y, w_last = torch.randn(y.shape, generator=g), torch.randn(last.shape, generator=g)
    got = torch.autograd.grad((y * w_y).sum() + (last * w_last).sum(), list(leaves.values()))
    want = torch.autograd.grad((want_y * w_y).sum() + (want_last * w_last).sum(), list(leaves.values()))
    for name, a, b in zip(leaves, got, want):
        assert rel_err(a, b) < 1e-4, name


def test_return_shape_without_last_state():
    args = make_inputs(ScanShape(1, 2, 3, 5, "shared", 1), seed=0)
    y = ops.selective_scan(**args, backend="reference")
    assert isinstance(y, torch.Tensor) and y.shape == (1, 2, 5)


def test_half_precision_in_and_out_computed_in_fp32():
    args = make_inputs(ScanShape(1, 4, 8, 33, "shared", 1), seed=3, dtype=torch.bfloat16)
    y = ops.selective_scan(**args, backend="reference")
    assert y.dtype == torch.bfloat16
    want, _ = recurrence64(**args)  # same bf16 inputs, exact arithmetic: only the output rounding differs
    assert rel_err(y, want) < 1e-2


def test_rejects_mismatched_shapes():
    args = make_inputs(ScanShape(1, 4, 8, 6, "grouped", 2), seed=0)
    with pytest.raises(ValueError, match="u and delta"):
        ops.selective_scan(**{**args, "delta": args["delta"][..., :-1]}, backend="reference")
    with pytest.raises(ValueError, match="multiple of the B groups"):
        ops.selective_scan(**{**args, "B": torch.zeros(1, 3, 8, 6)}, backend="reference")
    with pytest.raises(ValueError, match="A must be"):
        ops.selective_scan(**{**args, "A": torch.zeros(5, 8)}, backend="reference")


# --- decode step -------------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(seed=seeds, d=st.integers(1, 6), N=st.integers(1, 32), L=st.integers(1, 12),
       flags=st.tuples(*[st.booleans()] * 4))
def test_state_update_steps_match_scan_mamba1(seed, d, N, L, flags):
    D, z, delta_bias, softplus = flags
    args = make_inputs(ScanShape(2, d, N, L, "shared", 1), seed, D=D, z=z, delta_bias=delta_bias, softplus=softplus)
    y, last = ops.selective_scan(**args, return_last_state=True, backend="reference")
    state = torch.zeros(2, d, N)
    for t in range(L):
        out = ops.selective_state_update(
            state, args["u"][..., t], args["delta"][..., t], args["A"], args["B"][..., t], args["C"][..., t],
            D=args["D"], z=None if args["z"] is None else args["z"][..., t], dt_bias=args["delta_bias"],
            dt_softplus=softplus, backend="reference",
        )
        assert out.shape == (2, d)
        torch.testing.assert_close(out, y[..., t], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, last, rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(seed=seeds, heads_per_group=st.integers(1, 3), ngroups=st.integers(1, 2), p=st.integers(1, 4),
       N=st.integers(1, 16), L=st.integers(1, 10), flags=st.tuples(*[st.booleans()] * 4))
def test_state_update_steps_match_scan_mamba2(seed, heads_per_group, ngroups, p, N, L, flags):
    """Mamba-2 decode shapes (b, h, p, N) against selective_scan over the flattened channels d = h * p, with
    B/C grouped per ngroups: the same recurrence in the other layout."""
    D, z, dt_bias, softplus = flags
    h = heads_per_group * ngroups
    b = 2
    args = make_inputs(ScanShape(b, h * p, N, L, "grouped", ngroups), seed, D=D, z=z, delta_bias=dt_bias,
                       softplus=softplus)
    y, last = ops.selective_scan(**args, return_last_state=True, backend="reference")
    state = torch.zeros(b, h, p, N)
    A = args["A"].reshape(h, p, N)
    Dh = None if args["D"] is None else args["D"].reshape(h, p)
    bias = None if args["delta_bias"] is None else args["delta_bias"].reshape(h, p)
    for t in range(L):
        out = ops.selective_state_update(
            state, args["u"][..., t].reshape(b, h, p), args["delta"][..., t].reshape(b, h, p), A,
            args["B"][..., t], args["C"][..., t], D=Dh,
            z=None if args["z"] is None else args["z"][..., t].reshape(b, h, p), dt_bias=bias, dt_softplus=softplus,
            backend="reference",
        )
        assert out.shape == (b, h, p)
        torch.testing.assert_close(out.reshape(b, h * p), y[..., t], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state.reshape(b, h * p, N), last, rtol=1e-5, atol=1e-5)


def test_state_update_keeps_state_dtype_and_identity():
    """The state is written in place in its own dtype; a bf16 state cache stays bf16."""
    state = torch.randn(1, 3, 4).to(torch.bfloat16)
    before = state.clone()
    x, dt = torch.randn(1, 3), torch.zeros(1, 3)  # dt = 0: decay 1, no input: the state must not move
    out = ops.selective_state_update(state, x, dt, -torch.ones(3, 4), torch.randn(1, 4), torch.ones(1, 4),
                                     backend="reference")
    assert state.dtype == torch.bfloat16 and torch.equal(state, before)
    torch.testing.assert_close(out, before.float().sum(-1), rtol=1e-5, atol=1e-5)


def test_state_update_rejects_group_mismatch():
    with pytest.raises(ValueError, match="multiple of the B/C groups"):
        ops.selective_state_update(torch.zeros(1, 3, 2, 4), torch.zeros(1, 3, 2), torch.zeros(1, 3, 2),
                                   torch.zeros(3, 2, 4), torch.zeros(1, 2, 4), torch.zeros(1, 2, 4),
                                   backend="reference")


@pytest.mark.slow
def test_long_sequence_fits_in_bounded_memory():
    """b=1, d=1536, N=16, L=16384 on CPU: inputs alone are ~300 MB; materialising exp(delta A) for all steps, as
    mamba-ssm's selective_scan_ref does, would add 1.6 GB per tensor. Peak RSS of a fresh process must stay low."""
    code = """
import resource, torch
from perfmamba import ops
torch.manual_seed(0)
b, d, N, L = 1, 1536, 16, 16384
u = torch.randn(b, d, L); delta = torch.rand(b, d, L) * 0.1; A = -torch.rand(d, N)
B = torch.randn(b, N, L); C = torch.randn(b, N, L)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
y, last = ops.selective_scan(u, delta, A, B, C, return_last_state=True, backend="reference")
head = ops.selective_scan(u[..., :64], delta[..., :64], A, B[..., :64], C[..., :64], backend="reference")
assert torch.isfinite(y).all() and torch.equal(y[..., :64], head)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    extra_mib = int(out.stdout.split()[-1])
    assert extra_mib < 1024, f"the scan itself took {extra_mib} MiB at L=16384"
