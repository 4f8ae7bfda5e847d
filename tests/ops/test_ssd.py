"""The chunked reference SSD scan against a float64 recurrence written out here, and against selective_scan."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import SSDShape, seeds, ssd_shapes

from perfmamba import ops

INF = float("inf")


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30)).item()


def recurrence64(x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
                 dt_softplus=False, dt_limit=(0.0, INF)):
    """Per head: h_t = exp(A dt_t) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t + D x_t, y *= silu(z), in float64 one
    step at a time; the state restarts (from zero) wherever seq_idx changes, and the initial state is sequence 0's.
    Returns y (b, L, h, p) and the final state (b, h, p, N)."""
    b, L, h, p = x.shape
    g, N = B.shape[2:]
    x, dt, A = x.double(), dt.double(), A.double()
    if dt_bias is not None:
        dt = dt + dt_bias.double()
    if dt_softplus:
        dt = F.softplus(dt)
    dt = dt.clamp(dt_limit[0], dt_limit[1])
    Bh = B.double().repeat_interleave(h // g, dim=2)
    Ch = C.double().repeat_interleave(h // g, dim=2)
    state = x.new_zeros(b, h, p, N) if initial_states is None else initial_states.double().clone()
    previous = torch.zeros(b, dtype=torch.long)
    ys = []
    for t in range(L):
        if seq_idx is not None:
            restart = seq_idx[:, t] != previous
            state[restart] = 0
            previous = seq_idx[:, t]
        decay = torch.exp(A * dt[:, t])[:, :, None, None]  # (b, h, 1, 1)
        state = decay * state + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append((state * Ch[:, t, :, None, :]).sum(-1))
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p)
    if D is not None:
        y = y + x * (D.double()[:, None] if D.dim() == 1 else D.double())
    if z is not None:
        y = y * F.silu(z.double())
    return y, state


def make_inputs(shape: SSDShape, seed: int, *, D="head", z=True, dt_bias=True, softplus=True, initial=True,
                dtype=torch.float32):
    """Inputs in the ranges Mamba-2 produces: A = -exp(.) per head, dt = softplus(raw + dt_bias) small."""
    gen = torch.Generator().manual_seed(seed)
    b, L, h, p, g, N = shape.batch, shape.L, shape.nheads, shape.headdim, shape.ngroups, shape.d_state

    def randn(*s):
        return torch.randn(*s, generator=gen)

    dt = randn(b, L, h) * 0.5 - 2.0 if softplus else torch.rand(b, L, h, generator=gen) * 0.2 + 0.01
    Dval = {"head": randn(h), "channel": randn(h, p), None: None}[D]
    # without softplus a positive bias keeps dt > 0: the kernel would clamp negative steps to 0 (tested apart)
    bias = randn(h) * 0.1 if softplus else torch.rand(h, generator=gen) * 0.05
    return dict(
        x=randn(b, L, h, p).to(dtype), dt=dt.to(dtype), A=-torch.exp(torch.rand(h, generator=gen) * 3 - 1),
        B=randn(b, L, g, N).to(dtype), C=randn(b, L, g, N).to(dtype), chunk_size=shape.chunk_size, D=Dval,
        z=randn(b, L, h, p).to(dtype) if z else None, dt_bias=bias if dt_bias else None,
        initial_states=randn(b, h, p, N) if initial else None, dt_softplus=softplus,
    )


def oracle_args(args: dict) -> dict:
    return {k: v for k, v in args.items() if k != "chunk_size"}


@settings(max_examples=40, deadline=None)
@given(shape=ssd_shapes(), seed=seeds, D=st.sampled_from(["head", "channel", None]),
       flags=st.tuples(*[st.booleans()] * 4))
@example(shape=SSDShape(1, 1024, 2, 4, 1, 16, 256), seed=0, D="channel", flags=(True, True, True, True))
@example(shape=SSDShape(2, 97, 2, 2, 2, 256, 64), seed=1, D="head", flags=(True, True, True, True))
@example(shape=SSDShape(1, 2000, 1, 1, 1, 1, 3), seed=2, D=None, flags=(False, False, False, False))
def test_reference_matches_float64_recurrence(shape, seed, D, flags):
    z, dt_bias, softplus, initial = flags
    args = make_inputs(shape, seed, D=D, z=z, dt_bias=dt_bias, softplus=softplus, initial=initial)
    y, final = ops.ssd_scan(**args, return_final_states=True, backend="reference")
    want_y, want_final = recurrence64(**oracle_args(args))
    assert y.shape == (shape.batch, shape.L, shape.nheads, shape.headdim) and y.dtype == torch.float32
    assert final.shape == (shape.batch, shape.nheads, shape.headdim, shape.d_state) and final.dtype == torch.float32
    assert rel_err(y, want_y) < 1e-5
    assert rel_err(final, want_final) < 1e-5


@settings(max_examples=25, deadline=None)
@given(shape=ssd_shapes(max_L=200), seed=seeds, data=st.data())
def test_seq_idx_restarts_the_state_at_sequence_boundaries(shape, seed, data):
    """Packed sequences: seq_idx is non-decreasing; boundaries may fall inside chunks or on their edges."""
    bounds = data.draw(st.lists(st.integers(0, shape.L), max_size=4))
    seq_idx = torch.zeros(shape.batch, shape.L, dtype=torch.long)
    for boundary in bounds:
        seq_idx[:, boundary:] += 1
    args = make_inputs(shape, seed)
    y, final = ops.ssd_scan(**args, seq_idx=seq_idx.to(torch.int32), return_final_states=True, backend="reference")
    want_y, want_final = recurrence64(**oracle_args(args), seq_idx=seq_idx)
    assert rel_err(y, want_y) < 1e-5
    assert rel_err(final, want_final) < 1e-5


def test_dt_limit_clamps_after_softplus():
    args = make_inputs(SSDShape(1, 37, 2, 4, 1, 8, 16), seed=5)
    limit = (0.05, 0.1)
    y = ops.ssd_scan(**args, dt_limit=limit, backend="reference")
    want, _ = recurrence64(**oracle_args(args), dt_limit=limit)
    assert rel_err(y, want) < 1e-5
    unclamped, _ = recurrence64(**oracle_args(args))
    assert rel_err(y, unclamped) > 1e-3  # the limit did bind


def test_negative_dt_without_softplus_is_clamped_to_zero_like_the_kernel():
    """mamba-ssm's Triton kernel clamps dt to dt_limit = (0, inf) even by default."""
    args = make_inputs(SSDShape(1, 9, 1, 2, 1, 3, 4), seed=0, softplus=False, dt_bias=False, initial=False, z=False)
    args["dt"] = -args["dt"]  # all negative: every step is dt = 0, so only the D term remains
    y = ops.ssd_scan(**args, backend="reference")
    torch.testing.assert_close(y, args["x"] * args["D"][:, None], rtol=0, atol=0)


def test_segments_of_chunks_give_the_same_result(monkeypatch):
    """Long sequences run in segments of whole chunks (bounded memory); the seams must not show."""
    shape = SSDShape(2, 150, 4, 3, 2, 5, 8)
    args = make_inputs(shape, seed=11)
    seq_idx = (torch.arange(150) >= 70).long().expand(2, -1) + (torch.arange(150) >= 123).long()
    whole = ops.ssd_scan(**args, seq_idx=seq_idx, return_final_states=True, backend="reference")
    monkeypatch.setattr(sys.modules["perfmamba.ops.ssd"], "SEGMENT_ELEMENTS", 2 * 4 * 8 * 8 * 3)  # 3 chunks
    segmented = ops.ssd_scan(**args, seq_idx=seq_idx, return_final_states=True, backend="reference")
    for got, want in zip(segmented, whole):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(shape=ssd_shapes(max_L=300), seed=seeds, flags=st.tuples(*[st.booleans()] * 3))
def test_matches_selective_scan_in_the_mamba2_special_case(shape, seed, flags):
    """SSD is the selective scan with A = A_h for every channel and state of head h, dt shared by a head's
    channels, and B/C grouped: the two reference kernels must agree."""
    z, dt_bias, softplus = flags
    args = make_inputs(shape, seed, z=z, dt_bias=dt_bias, softplus=softplus, initial=False)
    b, L, h, p, N = shape.batch, shape.L, shape.nheads, shape.headdim, shape.d_state
    y = ops.ssd_scan(**args, backend="reference")

    def channels(t):  # (b, L, h, p) -> (b, h * p, L)
        return t.reshape(b, L, h * p).transpose(1, 2)

    y_ss = ops.selective_scan(
        channels(args["x"]), channels(args["dt"][..., None].expand(-1, -1, -1, p)),
        args["A"][:, None, None].expand(h, p, N).reshape(h * p, N),
        args["B"].permute(0, 2, 3, 1), args["C"].permute(0, 2, 3, 1),
        D=args["D"].repeat_interleave(p), z=None if args["z"] is None else channels(args["z"]),
        delta_bias=None if args["dt_bias"] is None else args["dt_bias"].repeat_interleave(p),
        delta_softplus=softplus, backend="reference",
    )
    assert rel_err(channels(y), y_ss) < 1e-5


def test_bf16_in_bf16_out():
    args = make_inputs(SSDShape(1, 40, 2, 4, 1, 16, 16), seed=2, dtype=torch.bfloat16)
    y, final = ops.ssd_scan(**args, return_final_states=True, backend="reference")
    assert y.dtype == torch.bfloat16 and final.dtype == torch.float32
    want, _ = recurrence64(**oracle_args(args))
    assert rel_err(y, want) < 1e-2


def test_rejects_bad_arguments():
    args = make_inputs(SSDShape(1, 8, 3, 2, 1, 4, 4), seed=0)
    with pytest.raises(ValueError, match="multiple of the B/C groups"):
        ops.ssd_scan(**{**args, "B": torch.zeros(1, 8, 2, 4), "C": torch.zeros(1, 8, 2, 4)}, backend="reference")
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        ops.ssd_scan(**{**args, "chunk_size": 0}, backend="reference")
    with pytest.raises(ValueError, match="D must be"):
        ops.ssd_scan(**{**args, "D": torch.zeros(2)}, backend="reference")
    with pytest.raises(ValueError, match="initial_states must be"):
        ops.ssd_scan(**{**args, "initial_states": torch.zeros(1, 3, 2, 5)}, backend="reference")


def test_reference_is_differentiable():
    """Training on CPU backpropagates through the reference: its gradients match the float64 recurrence's."""
    args = make_inputs(SSDShape(2, 21, 4, 3, 2, 5, 8), seed=4)
    leaves = [v.requires_grad_() for v in args.values() if isinstance(v, torch.Tensor)]
    y, final = ops.ssd_scan(**args, return_final_states=True, backend="reference")
    want_y, want_final = recurrence64(**oracle_args(args))
    g = torch.Generator().manual_seed(0)
    w_y, w_final = torch.randn(y.shape, generator=g), torch.randn(final.shape, generator=g)
    got = torch.autograd.grad((y * w_y).sum() + (final * w_final).sum(), leaves)
    want = torch.autograd.grad((want_y * w_y).sum() + (want_final * w_final).sum(), leaves)
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-4
