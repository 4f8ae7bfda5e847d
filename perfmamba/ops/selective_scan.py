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

# Time steps whose decays and inputs are materialised at once: bounds the extra memory to
# 2 * b * d * N * CHUNK floats at any L; the size that stays in cache (docs/results/constants.md).
CHUNK = 64


def _time_major(X: Tensor, d: int, name: str) -> tuple[Tensor, bool]:
    """B or C as a time-major float tensor broadcastable against (L, b, G, d // G, N), and whether it varies
    over time. Accepts mamba-ssm's layouts: (d, N) time-invariant, (b, N, L) shared, (b, G, N, L) grouped."""
    if X.is_complex():
        raise NotImplementedError(f"complex {name} is not supported by the reference selective scan")
    if X.dim() == 2:
        if X.shape[0] != d:
            raise ValueError(f"time-invariant {name} must be (d={d}, N), got {tuple(X.shape)}")
        return X.float()[None, None, None], False  # (1, 1, 1, d, N)
    if X.dim() == 3:
        X = X.unsqueeze(1)
    if X.dim() != 4:
        raise ValueError(f"{name} must be (d, N), (b, N, L) or (b, G, N, L), got {tuple(X.shape)}")
    if d % X.shape[1]:
        raise ValueError(f"channels d={d} must be a multiple of the {name} groups G={X.shape[1]}")
    # (b, G, N, L) -> (L, b, G, 1, N), contiguous so that each time step is one dense block
    return X.float().permute(3, 0, 1, 2).unsqueeze(3).contiguous(), True


def _grouped(t: Tensor, X: Tensor) -> Tensor:
    """View (..., d, N) as (..., G, d // G, N) to broadcast against B or C in `_time_major` layout."""
    groups = X.shape[2]
    return t.unflatten(-2, (groups, t.shape[-2] // groups))


def _scan_inplace(dt_t: Tensor, dtu_t: Tensor, A: Tensor, Bt: Tensor, Ct: Tensor, B_varies: bool, C_varies: bool,
                  N: int) -> tuple[Tensor, Tensor]:
    """The recurrence over time-major inputs dt, dt * u (L, b, d): returns y (L, b, d) and the last state.
    In place, in preallocated buffers: the fast path when no gradient is needed."""
    L, b, d = dt_t.shape
    # All buffers are allocated once: per-chunk allocations interleaved with the growing output fragment the
    # CPU heap (glibc kept 1.5 GB of holes at L=16384, d=1536 when each chunk allocated its own).
    T = max(1, min(CHUNK, L))
    decay, states = dt_t.new_empty((T, b, d, N)), dt_t.new_empty((T, b, d, N))
    y_t = dt_t.new_empty((L, b, d))
    h = dt_t.new_zeros((b, d, N))
    for t0 in range(0, L, T):
        n = min(L, t0 + T) - t0
        Bc = Bt[t0:t0 + n] if B_varies else Bt
        Cc = Ct[t0:t0 + n] if C_varies else Ct
        dec, st = decay[:n], states[:n]
        torch.exp(torch.mul(dt_t[t0:t0 + n, :, :, None], A, out=dec), out=dec)
        torch.mul(_grouped(dtu_t[t0:t0 + n, :, :, None], Bc), Bc, out=_grouped(st, Bc))
        st[0].addcmul_(dec[0], h)
        for t in range(1, n):
            st[t].addcmul_(dec[t], st[t - 1])
        h.copy_(st[n - 1])
        scratch = _grouped(dec, Cc)  # the decays are spent: reuse their buffer for C_t * h_t
        torch.mul(_grouped(st, Cc), Cc, out=scratch)
        torch.sum(scratch, dim=-1, out=y_t[t0:t0 + n].view(n, b, *scratch.shape[2:4]))
    return y_t, h


def _scan_autograd(dt_t: Tensor, dtu_t: Tensor, A: Tensor, Bt: Tensor, Ct: Tensor, B_varies: bool,
                   C_varies: bool, N: int) -> tuple[Tensor, Tensor]:
    """`_scan_inplace` without in-place ops or out= buffers, so that autograd can differentiate it (training
    on CPU). Autograd keeps every state for the backward pass: O(b * d * N * L) memory, as any unfused scan."""
    L, b, d = dt_t.shape
    h = dt_t.new_zeros((b, d, N))
    ys = []
    for t0 in range(0, L, CHUNK):
        n = min(L, t0 + CHUNK) - t0
        Bc = Bt[t0:t0 + n] if B_varies else Bt
        Cc = Ct[t0:t0 + n] if C_varies else Ct
        decay = torch.exp(dt_t[t0:t0 + n, :, :, None] * A)
        drive = (_grouped(dtu_t[t0:t0 + n, :, :, None], Bc) * Bc).reshape(n, b, d, N)
        states = []
        for t in range(n):
            h = torch.addcmul(drive[t], decay[t], h)
            states.append(h)
        states = torch.stack(states)
        ys.append((_grouped(states, Cc) * Cc).sum(-1).reshape(n, b, d))
    return (torch.cat(ys) if ys else dt_t.new_zeros((0, b, d))), h


def selective_scan_ref(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None, z: Tensor | None = None,
    delta_bias: Tensor | None = None, delta_softplus: bool = False, return_last_state: bool = False,
):
    """Pure-PyTorch `selective_scan_fn`, computed in fp32; returns y in u's dtype and the last state in fp32.

    A sequential recurrence, vectorised over (b, d, N) and run in chunks of time (see CHUNK): on CPU this beats
    the chunked-parallel (segment-sum) form, whose O(CHUNK^2) work per step outweighs the Python loop."""
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (batch, d, L), got {tuple(u.shape)} and {tuple(delta.shape)}")
    if A.is_complex():
        raise NotImplementedError("complex A is not supported by the reference selective scan")
    b, d, L = u.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (d={d}, N), got {tuple(A.shape)}")
    N = A.shape[1]
    dtype = u.dtype
    uf = u.float()
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Bt, B_varies = _time_major(B, d, "B")
    Ct, C_varies = _time_major(C, d, "C")
    # Time-major copies, so that every step of the loop reads and writes one contiguous (b, d, N) block.
    dt_t = dt.permute(2, 0, 1).contiguous()  # (L, b, d)
    dtu_t = (dt * uf).permute(2, 0, 1).contiguous()
    differentiable = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, delta_bias)
    )
    scan = _scan_autograd if differentiable else _scan_inplace
    y_t, h = scan(dt_t, dtu_t, A.float(), Bt, Ct, B_varies, C_varies, N)
    y = y_t.permute(1, 2, 0)
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
    """One decode step; updates `state` in place and returns y in x's dtype.

    Mamba-1: state (b, d, N), x/dt/z (b, d), A (d, N), B/C (b, N), D/dt_bias (d,).
    Mamba-2: state (b, h, p, N), x/dt/z (b, h, p), A (h, p, N), B/C (b, g, N), D/dt_bias (h, p)."""
    mamba2 = state.dim() == 4
    if not mamba2:  # lift Mamba-1 shapes to the (b, h, p, N) form with h = 1, as mamba-ssm does
        state4, x, dt, A = state.unsqueeze(1), x.unsqueeze(1), dt.unsqueeze(1), A.unsqueeze(0)
        B, C = B.unsqueeze(1), C.unsqueeze(1)
        D = D.unsqueeze(0) if D is not None else None
        z = z.unsqueeze(1) if z is not None else None
        dt_bias = dt_bias.unsqueeze(0) if dt_bias is not None else None
    else:
        state4 = state
    if state.dim() not in (3, 4) or x.shape != state4.shape[:3]:
        raise ValueError(
            f"state must be (b, d, N) or (b, h, p, N) with x (b, d) or (b, h, p); "
            f"got state {tuple(state.shape)} and x {tuple(x.shape)}"
        )
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
    # y from the fp32 state, before it is rounded to the cache's dtype: what the Triton kernel does
    out = (new * Ch).sum(-1)
    if D is not None:
        out = out + x.float() * D.float()
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(x.dtype)
    return out if mamba2 else out.squeeze(1)


def _selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False):
    out = _cuda.kernel("selective_scan")(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if return_last_state and B.dim() == 2 and not B.is_complex():
        # With time-invariant B the kernel scans delta * u and applies B at the output, so its "last state"
        # lacks the factor B; restore it so that both backends return h_L (as mamba-ssm's selective_scan_ref).
        y, last = out
        return y, last * B.to(last.dtype)
    return out


def _selective_state_update_cuda(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    # mamba-ssm 2.3's Triton decode kernel dereferences dt_bias and D unconditionally; zeros are exact stand-ins.
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
    """mamba-ssm's `selective_scan_fn`: u/delta/z (b, d, L); A (d, N); B/C (b, N, L), (b, G, N, L) or (d, N);
    D/delta_bias (d,). Returns y (b, d, L) in u's dtype [, last_state (b, d, N) fp32]."""
    _, fn = resolve("selective_scan", backend, u)
    return fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
              return_last_state=return_last_state)


def selective_state_update(
    state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
    z: Tensor | None = None, dt_bias: Tensor | None = None, dt_softplus: bool = False, *, backend: str = "auto",
) -> Tensor:
    """mamba-ssm's `selective_state_update`: one recurrent step, `state` updated in place; returns y.
    Shapes: see `selective_state_update_ref` (Mamba-1 and Mamba-2 families)."""
    _, fn = resolve("selective_state_update", backend, x)
    return fn(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)
