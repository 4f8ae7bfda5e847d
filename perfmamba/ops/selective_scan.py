"""Mamba-1's selective scan and its one-step decode update: the pure-PyTorch references beside the CUDA kernels.

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        (per channel d and state n)
    y_t = <C_t, h_t> + D * u_t,   then y_t *= silu(z_t) if z is given

with delta_t = softplus(delta_t + delta_bias) when delta_softplus. Semantics and signatures of mamba-ssm's
`selective_scan_fn` / `selective_state_update`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from perfmamba.ops import _cuda
from perfmamba.ops.registry import register, resolve

# Time steps whose decays and inputs are materialised at once: bounds memory to O(b * d * N * CHUNK) at any L
# while keeping the Python loop's per-step work on whole (b, d, N) tensors.
CHUNK = 256


def _per_channel(X: Tensor, d: int) -> Tensor:
    """B or C as (b, d, N, L) views: (d, N) time-invariant, (b, N, L) shared, or (b, G, N, L) grouped."""
    if X.dim() == 2:  # (d, N): the same for every step
        return X[None, :, :, None]
    if X.dim() == 3:
        return X.unsqueeze(1)
    groups = X.shape[1]
    if d % groups:
        raise ValueError(f"channels ({d}) must be a multiple of the B/C groups ({groups})")
    return X.repeat_interleave(d // groups, dim=1)


def selective_scan_ref(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None, z: Tensor | None = None,
    delta_bias: Tensor | None = None, delta_softplus: bool = False, return_last_state: bool = False,
):
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (batch, d, L), got {tuple(u.shape)} and {tuple(delta.shape)}")
    if A.is_complex():
        raise NotImplementedError("complex A is not supported by the reference selective scan")
    dtype = u.dtype
    b, d, L = u.shape
    uf, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    A = A.float()
    Bc, Cc = _per_channel(B.float(), d), _per_channel(C.float(), d)
    h = u.new_zeros((b, d, A.shape[1]), dtype=torch.float32)
    ys = []
    for t0 in range(0, L, CHUNK):
        t1 = min(L, t0 + CHUNK)
        dt = delta[:, :, t0:t1]  # (b, d, T)
        decay = torch.exp(dt.unsqueeze(-1) * A[:, None, :])  # (b, d, T, N)
        Bt = Bc[..., t0:t1] if Bc.shape[-1] > 1 else Bc
        drive = (dt * uf[:, :, t0:t1]).unsqueeze(-1) * Bt.transpose(-1, -2)  # (b, d, T, N)
        states = torch.empty_like(drive)
        for t in range(t1 - t0):
            h = torch.addcmul(drive[:, :, t], decay[:, :, t], h)
            states[:, :, t] = h
        Ct = Cc[..., t0:t1] if Cc.shape[-1] > 1 else Cc
        ys.append(torch.einsum("bdtn,bdnt->bdt", states, Ct.expand(b, d, -1, t1 - t0)))
    y = torch.cat(ys, dim=-1) if ys else uf.new_zeros((b, d, 0))
    if D is not None:
        y = y + D.float()[:, None] * uf
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype)
    return (y, h) if return_last_state else y


def selective_state_update_ref(
    state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
    z: Tensor | None = None, dt_bias: Tensor | None = None, dt_softplus: bool = False,
) -> Tensor:
    """One decode step; updates `state` in place. Mamba-1: state (b, d, N), x (b, d), B/C (b, N).
    Mamba-2: state (b, h, p, N), x (b, h, p), A (h, p, N), B/C (b, g, N)."""
    mamba2 = state.dim() == 4
    if not mamba2:  # lift Mamba-1 shapes to the (b, h, p, N) form with h = 1
        state4, x, dt, A = state.unsqueeze(1), x.unsqueeze(1), dt.unsqueeze(1), A.unsqueeze(0)
        B, C = B.unsqueeze(1), C.unsqueeze(1)
        D = D.unsqueeze(0) if D is not None else None
        z = z.unsqueeze(1) if z is not None else None
        dt_bias = dt_bias.unsqueeze(0) if dt_bias is not None else None
    else:
        state4 = state
    nheads, groups = state4.shape[1], B.shape[1]
    if nheads % groups:
        raise ValueError(f"heads ({nheads}) must be a multiple of the B/C groups ({groups})")
    Bh = B.float().repeat_interleave(nheads // groups, dim=1)[:, :, None, :]  # (b, h, 1, N)
    Ch = C.float().repeat_interleave(nheads // groups, dim=1)[:, :, None, :]
    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    if dt_softplus:
        dt = F.softplus(dt)
    dA = torch.exp(dt.unsqueeze(-1) * A.float())  # (b, h, p, N)
    new = state4.float() * dA + (dt * x.float()).unsqueeze(-1) * Bh
    state4.copy_(new)
    out = (new * Ch).sum(-1)
    if D is not None:
        out = out + x.float() * D.float()
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(x.dtype)
    return out if mamba2 else out.squeeze(1)


def _selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False):
    return _cuda.kernel("selective_scan")(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
    )


def _selective_state_update_cuda(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    # mamba-ssm 2.3's Triton decode kernel dereferences dt_bias and D unconditionally.
    if D is None:
        D = torch.zeros(A.shape[:-1], device=x.device, dtype=torch.float32)
    if dt_bias is None:
        dt_bias = torch.zeros(A.shape[:-1], device=x.device, dtype=torch.float32)
    return _cuda.kernel("selective_state_update")(
        state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus
    )


register("selective_scan", "reference", selective_scan_ref)
register("selective_scan", "cuda", _selective_scan_cuda, availability=_cuda.unavailable("selective_scan"))
register("selective_state_update", "reference", selective_state_update_ref)
register(
    "selective_state_update", "cuda", _selective_state_update_cuda,
    availability=_cuda.unavailable("selective_state_update"),
)


def selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None, z: Tensor | None = None,
    delta_bias: Tensor | None = None, delta_softplus: bool = False, return_last_state: bool = False,
    *, backend: str = "auto",
):
    """mamba-ssm's `selective_scan_fn`: u/delta/z (b, d, L); A (d, N); B/C (b, N, L), (b, G, N, L) or (d, N).

    Returns y (b, d, L), and the last state (b, d, N) when return_last_state."""
    _, fn = resolve("selective_scan", backend, u)
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def selective_state_update(
    state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
    z: Tensor | None = None, dt_bias: Tensor | None = None, dt_softplus: bool = False, *, backend: str = "auto",
) -> Tensor:
    """mamba-ssm's `selective_state_update`: one recurrent step, `state` updated in place; returns y."""
    _, fn = resolve("selective_state_update", backend, x)
    return fn(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
