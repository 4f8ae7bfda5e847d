"""Mamba-2's state space dual (SSD) scan: the chunked pure-PyTorch reference beside mamba-ssm's Triton kernels.

Per head h (scalar decay a_t = A_h * dt_t) and group g = h // (heads per group):
    h_t = exp(a_t) * h_{t-1} + dt_t * x_t B_t^T        y_t = h_t C_t + D_h * x_t,  then y_t *= silu(z_t)
The reference is the chunked algorithm of the Mamba-2 paper (ssd_minimal): quadratic attention-like work inside
chunks of `chunk_size` steps, a linear recurrence over chunk states between them. Semantics and signature of
mamba-ssm's `mamba_chunk_scan_combined`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from perfmamba.ops import _cuda
from perfmamba.ops.registry import register, resolve


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
    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    if dt_softplus:
        dt = F.softplus(dt)
    if dt_limit != (0.0, float("inf")):
        dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
    return dt


def ssd_scan_ref(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, D: Tensor | None = None,
    z: Tensor | None = None, dt_bias: Tensor | None = None, initial_states: Tensor | None = None,
    seq_idx: Tensor | None = None, dt_softplus: bool = False, dt_limit: tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
):
    if seq_idx is not None:
        raise NotImplementedError("seq_idx (packed sequences) is not supported by the reference SSD scan")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    b, L, h, p = x.shape
    g = B.shape[2]
    if h % g:
        raise ValueError(f"heads ({h}) must be a multiple of the B/C groups ({g})")
    dtype = x.dtype
    dt = discretize_dt(dt, dt_bias, dt_softplus, dt_limit)  # (b, L, h)
    Bh = B.float().repeat_interleave(h // g, dim=2)  # (b, L, h, N)
    Ch = C.float().repeat_interleave(h // g, dim=2)
    X = x.float() * dt[..., None]
    Adt = A.float()[None, None, :] * dt  # (b, L, h)
    # Zero-padding to whole chunks is exact: padded steps have dt = 0, so they neither decay nor drive the state.
    pad = (-L) % chunk_size
    if pad:
        X, Bh, Ch = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (X, Bh, Ch))
        Adt = F.pad(Adt, (0, 0, 0, pad))
    c = (L + pad) // chunk_size

    def chunks(t: Tensor) -> Tensor:  # (b, c*T, ...) -> (b, c, T, ...)
        return t.reshape(b, c, chunk_size, *t.shape[2:])

    X, Bh, Ch = chunks(X), chunks(Bh), chunks(Ch)
    Adt = chunks(Adt).permute(0, 3, 1, 2)  # (b, h, c, T)
    A_cumsum = torch.cumsum(Adt, dim=-1)

    # 1. within chunks: y_t = sum_{s<=t} (C_t . B_s) exp(a_{s+1} + ... + a_t) X_s
    decay = torch.exp(_segsum(Adt))  # (b, h, c, T, T)
    scores = torch.einsum("bclhn,bcshn->bhcls", Ch, Bh) * decay
    y = torch.einsum("bhcls,bcshp->bclhp", scores, X)
    # 2. each chunk's contribution to the state at its end
    decay_to_end = torch.exp(A_cumsum[..., -1:] - A_cumsum)  # (b, h, c, T)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bh, decay_to_end, X)
    # 3. states carried across chunks
    if initial_states is None:
        initial_states = X.new_zeros((b, h, p, Bh.shape[-1]))
    states = torch.cat([initial_states.float()[:, None], states], dim=1)  # (b, c+1, h, p, N)
    chunk_decay = torch.exp(_segsum(F.pad(A_cumsum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)
    states, final_states = states[:, :-1], states[:, -1]
    # 4. the carried-in state's contribution inside each chunk
    y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", Ch, states, torch.exp(A_cumsum))
    y = y.reshape(b, c * chunk_size, h, p)[:, :L]
    if D is not None:
        Df = D.float()
        y = y + x.float() * (Df[:, None] if Df.dim() == 1 else Df)
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype)
    return (y, final_states) if return_final_states else y


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
    D (h,) or (h, p), z (b, L, h, p), initial_states (b, h, p, N). Returns y [, final_states (b, h, p, N)]."""
    _, fn = resolve("ssd_scan", backend, x)
    return fn(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_limit,
              return_final_states)
