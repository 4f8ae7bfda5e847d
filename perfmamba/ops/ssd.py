"""Mamba-2's state space dual (SSD) scan: the chunked pure-PyTorch reference beside mamba-ssm's Triton kernels.

Per head h (scalar decay a_t = A_h * dt_t) and group g = h // (heads per group):
    h_t = exp(a_t) * h_{t-1} + dt_t * x_t B_t^T        y_t = h_t C_t + D_h * x_t,  then y_t *= silu(z_t)
The reference is the chunked algorithm of the Mamba-2 paper (ssd_minimal): quadratic attention-like work inside
chunks of `chunk_size` steps, a linear recurrence over chunk states between them. Semantics and signature of
mamba-ssm's `mamba_chunk_scan_combined`, including `seq_idx` (packed sequences: the state restarts wherever
seq_idx changes; the initial state belongs to sequence 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from perfmamba.ops import _cuda
from perfmamba.ops.registry import register, resolve

# Upper bound on the elements of one (b, h, chunks, T, T) intra-chunk tensor: the sequence is processed in
# segments of whole chunks, each starting from the previous one's final state, so memory is O(1) in L.
SEGMENT_ELEMENTS = 1 << 24


def _segsum(x: Tensor) -> Tensor:
    """out[..., i, j] = x[..., j+1] + ... + x[..., i] for j <= i, -inf above the diagonal.

    Built from masked cumulative sums rather than differences of one cumsum, which would cancel badly."""
    T = x.shape[-1]
    x = x[..., None].expand(*x.shape, T)
    strictly_lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=-1)
    x = x.masked_fill(~strictly_lower, 0)
    out = torch.cumsum(x, dim=-2)
    lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device))
    return out.masked_fill(~lower, float("-inf"))


def discretize_dt(
    dt: Tensor, dt_bias: Tensor | None, dt_softplus: bool, dt_limit: tuple[float, float] = (0.0, float("inf"))
) -> Tensor:
    """fp32 dt + bias, softplus, then clamped to dt_limit. The Triton kernel clamps even at the default limit,
    so a negative dt without softplus becomes 0 there; we do the same."""
    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    if dt_softplus:
        dt = F.softplus(dt)
    return dt.clamp(min=dt_limit[0], max=dt_limit[1])


def _ssd_segment(
    X: Tensor, Adt: Tensor, B: Tensor, C: Tensor, chunk_size: int, state: Tensor,
    seq: Tensor | None, seq_init: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """The chunked SSD on one segment. X = x * dt (b, L, h, p), Adt = A * dt (b, L, h), B/C per head (b, L, h, N),
    state (b, h, p, N) entering the segment, seq (b, L) and seq_init (b,) the sequence the entering state is of.
    Returns y (b, L, h, p) without the D and z terms, and the state leaving the segment."""
    b, L, h, p = X.shape
    T = chunk_size
    pad = (-L) % T
    # Zero-padding to whole chunks is exact: padded steps have dt = 0, so they neither decay nor drive the state.
    if pad:
        X, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (X, B, C))
        Adt = F.pad(Adt, (0, 0, 0, pad))
        if seq is not None:
            seq = torch.cat([seq, seq[:, -1:].expand(-1, pad)], dim=1)
    c = (L + pad) // T
    X, B, C = (t.reshape(b, c, T, *t.shape[2:]) for t in (X, B, C))
    Adt = Adt.reshape(b, c, T, h).permute(0, 3, 1, 2)  # (b, h, c, T)
    A_cumsum = torch.cumsum(Adt, dim=-1)

    # 1. within chunks: y_t = sum_{s<=t} (C_t . B_s) exp(a_{s+1} + ... + a_t) X_s
    scores = torch.einsum("bclhn,bcshn->bhcls", C, B) * torch.exp(_segsum(Adt))
    # 2. each chunk's contribution to the state at its end
    decay_to_end = torch.exp(A_cumsum[..., -1:] - A_cumsum)  # (b, h, c, T)
    # 3. states carried across chunks, from the entering state (index 0) on
    chunk_decay = torch.exp(_segsum(F.pad(A_cumsum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    # 4. the carried-in state's decay to each step of the next chunk
    carried_decay = torch.exp(A_cumsum)  # (b, h, c, T)
    if seq is not None:
        # Packed sequences: every path that crosses a change of seq_idx is cut, exactly as the kernel's masks do.
        seq = seq.reshape(b, c, T)
        seq_ends = torch.cat([seq_init[:, None], seq[:, :, -1]], dim=1)  # (b, c+1): whose state each chunk ends with
        scores = scores * (seq[:, :, :, None] == seq[:, :, None, :])[:, None]
        decay_to_end = decay_to_end * (seq == seq[:, :, -1:])[:, None]
        chunk_decay = chunk_decay * (seq_ends[:, :, None] == seq_ends[:, None, :])[:, None]
        carried_decay = carried_decay * (seq == seq_ends[:, :-1, None])[:, None]

    y = torch.einsum("bhcls,bcshp->bclhp", scores, X)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, decay_to_end, X)
    states = torch.cat([state[:, None], states], dim=1)  # (b, c+1, h, p, N)
    states = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)
    y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states[:, :-1], carried_decay)
    return y.reshape(b, c * T, h, p)[:, :L], states[:, -1]


def ssd_scan_ref(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, D: Tensor | None = None,
    z: Tensor | None = None, dt_bias: Tensor | None = None, initial_states: Tensor | None = None,
    seq_idx: Tensor | None = None, dt_softplus: bool = False, dt_limit: tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
):
    """Pure-PyTorch `mamba_chunk_scan_combined`, computed in fp32: y in x's dtype [, final_states fp32]."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if x.dim() != 4:
        raise ValueError(f"x must be (batch, L, heads, headdim), got {tuple(x.shape)}")
    b, L, h, p = x.shape
    if B.dim() != 4 or B.shape[:2] != (b, L) or C.shape != B.shape:
        raise ValueError(f"B and C must be (b={b}, L={L}, groups, N), got {tuple(B.shape)} and {tuple(C.shape)}")
    g, N = B.shape[2:]
    if h % g:
        raise ValueError(f"heads ({h}) must be a multiple of the B/C groups ({g})")
    if dt.shape != (b, L, h) or A.shape != (h,):
        raise ValueError(f"dt must be (b, L, h)={(b, L, h)} and A ({h},), got {tuple(dt.shape)} and {tuple(A.shape)}")
    if D is not None and D.shape not in ((h,), (h, p)):
        raise ValueError(f"D must be ({h},) or ({h}, {p}), got {tuple(D.shape)}")
    if initial_states is not None and initial_states.shape != (b, h, p, N):
        raise ValueError(f"initial_states must be {(b, h, p, N)}, got {tuple(initial_states.shape)}")
    if seq_idx is not None and seq_idx.shape != (b, L):
        raise ValueError(f"seq_idx must be (b, L)={(b, L)}, got {tuple(seq_idx.shape)}")

    dtype = x.dtype
    xf = x.float()
    dt = discretize_dt(dt, dt_bias, dt_softplus, dt_limit)  # (b, L, h)
    X = xf * dt[..., None]
    Adt = A.float() * dt
    Bh = B.float().repeat_interleave(h // g, dim=2)  # (b, L, h, N)
    Ch = C.float().repeat_interleave(h // g, dim=2)
    state = xf.new_zeros((b, h, p, N)) if initial_states is None else initial_states.float()
    seq_init = None if seq_idx is None else torch.zeros(b, dtype=seq_idx.dtype, device=seq_idx.device)
    span = chunk_size * max(1, SEGMENT_ELEMENTS // (b * h * chunk_size * chunk_size))
    ys = []
    for s0 in range(0, L, span):
        s = slice(s0, min(L, s0 + span))
        seq = None if seq_idx is None else seq_idx[:, s]
        y, state = _ssd_segment(X[:, s], Adt[:, s], Bh[:, s], Ch[:, s], chunk_size, state, seq, seq_init)
        if seq is not None:
            seq_init = seq[:, -1]
        ys.append(y)
    y = torch.cat(ys, dim=1) if ys else xf.new_zeros((b, 0, h, p))
    if D is not None:
        Df = D.float()
        y = y + xf * (Df[:, None] if Df.dim() == 1 else Df)
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype)
    return (y, state) if return_final_states else y


def _ssd_scan_cuda(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
                   dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False):
    return _cuda.kernel("ssd_scan")(
        x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states, seq_idx=seq_idx,
        dt_softplus=dt_softplus, dt_limit=dt_limit, return_final_states=return_final_states,
    )


register("ssd_scan", "reference", ssd_scan_ref)
register("ssd_scan", "cuda", _ssd_scan_cuda, availability=_cuda.unavailable("ssd_scan"))


def ssd_scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, D: Tensor | None = None,
    z: Tensor | None = None, dt_bias: Tensor | None = None, initial_states: Tensor | None = None,
    seq_idx: Tensor | None = None, dt_softplus: bool = False, dt_limit: tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False, *, backend: str = "auto",
):
    """mamba-ssm's `mamba_chunk_scan_combined`: x (b, L, h, p), dt (b, L, h), A (h,), B/C (b, L, g, N),
    D (h,) or (h, p), z (b, L, h, p), dt_bias (h,), initial_states (b, h, p, N), seq_idx (b, L) int.
    Returns y (b, L, h, p) in x's dtype [, final_states (b, h, p, N) fp32]."""
    _, fn = resolve("ssd_scan", backend, x)
    return fn(x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states,
              seq_idx=seq_idx, dt_softplus=dt_softplus, dt_limit=dt_limit, return_final_states=return_final_states)
