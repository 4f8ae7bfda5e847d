"""mamba-ssm's fused production paths, CUDA only: the whole Mamba-1 mixer (`mamba_inner_fn`) and Mamba-2's
conv + SSD + gated norm + out_proj (`mamba_split_conv1d_scan_combined`).

Their references here (`mamba_inner_ref`, `mamba_split_conv1d_scan_ref`) are compositions of the reference ops,
kept as oracles for tests and not registered as backends: "auto" on CPU must not quietly turn a request for the
fused path into the unfused one, so the fused ops raise where their kernels cannot run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from perfmamba.ops import _cuda
from perfmamba.ops.conv1d import causal_conv1d_ref
from perfmamba.ops.norm import rms_norm_gated_ref
from perfmamba.ops.registry import BackendUnavailableError, register, resolve
from perfmamba.ops.selective_scan import selective_scan_ref
from perfmamba.ops.ssd import ssd_scan_ref

INF = float("inf")


def _only_if_set(**kwargs) -> dict:
    # Arguments newer than mamba-ssm 2.2 are passed only when used, so that older versions keep working.
    return {k: v for k, v in kwargs.items() if v is not None}


def _mamba_inner_cuda(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                      out_proj_bias, A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None, C_proj_bias=None,
                      delta_softplus=True, checkpoint_lvl=1, b_rms_weight=None, c_rms_weight=None,
                      dt_rms_weight=None, b_c_dt_rms_eps=1e-6):
    rms = _only_if_set(b_rms_weight=b_rms_weight, c_rms_weight=c_rms_weight, dt_rms_weight=dt_rms_weight)
    if rms:
        rms["b_c_dt_rms_eps"] = b_c_dt_rms_eps
    return _cuda.kernel("mamba_inner")(
        xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias,
        A, B, C, D, delta_bias, B_proj_bias, C_proj_bias, delta_softplus, checkpoint_lvl, **rms,
    )


def _mamba_split_conv1d_scan_cuda(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size,
                                  initial_states=None, seq_idx=None, dt_limit=(0.0, INF), return_final_states=False,
                                  activation="silu", rmsnorm_weight=None, rmsnorm_eps=1e-6, outproj_weight=None,
                                  outproj_bias=None, headdim=None, ngroups=1, norm_before_gate=True,
                                  state_dtype=None):
    return _cuda.kernel("mamba_split_conv1d_scan")(
        zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, initial_states=initial_states,
        seq_idx=seq_idx, dt_limit=dt_limit, return_final_states=return_final_states, activation=activation,
        rmsnorm_weight=rmsnorm_weight, rmsnorm_eps=rmsnorm_eps, outproj_weight=outproj_weight,
        outproj_bias=outproj_bias, headdim=headdim, ngroups=ngroups, norm_before_gate=norm_before_gate,
        **_only_if_set(state_dtype=state_dtype),
    )


register("mamba_inner", "cuda", _mamba_inner_cuda, availability=_cuda.unavailable("mamba_inner"))
register(
    "mamba_split_conv1d_scan", "cuda", _mamba_split_conv1d_scan_cuda,
    availability=_cuda.unavailable("mamba_split_conv1d_scan"),
)


def _resolve_fused(op: str, backend: str, x: Tensor):
    try:
        return resolve(op, backend, x)
    except BackendUnavailableError as e:
        raise BackendUnavailableError(
            f"{e}. {op} is a fused CUDA kernel with no reference backend; run the model's unfused path "
            f"(path='unfused') or call the individual ops instead"
        ) from None


def mamba_inner(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias,
                A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None, C_proj_bias=None,
                delta_softplus=True, checkpoint_lvl=1, b_rms_weight=None, c_rms_weight=None, dt_rms_weight=None,
                b_c_dt_rms_eps=1e-6, *, backend: str = "auto"):
    """mamba-ssm's `mamba_inner_fn` (same arguments): xz (b, 2 * d_inner, L) -> out_proj output (b, L, d_model).
    CUDA only; the oracle is `mamba_inner_ref`."""
    _, fn = _resolve_fused("mamba_inner", backend, xz)
    return fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias,
              A, B, C, D, delta_bias, B_proj_bias, C_proj_bias, delta_softplus, checkpoint_lvl, b_rms_weight,
              c_rms_weight, dt_rms_weight, b_c_dt_rms_eps)


def mamba_split_conv1d_scan(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, initial_states=None,
                            seq_idx=None, dt_limit=(0.0, INF), return_final_states=False, activation="silu",
                            rmsnorm_weight=None, rmsnorm_eps=1e-6, outproj_weight=None, outproj_bias=None,
                            headdim=None, ngroups=1, norm_before_gate=True, state_dtype=None, *,
                            backend: str = "auto"):
    """mamba-ssm's `mamba_split_conv1d_scan_combined` (same arguments): zxbcdt (b, L, 2 * d_inner + 2 * ngroups *
    N + nheads) -> (b, L, d_inner) or the out_proj output. CUDA only; the oracle is `mamba_split_conv1d_scan_ref`."""
    _, fn = _resolve_fused("mamba_split_conv1d_scan", backend, zxbcdt)
    return fn(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, initial_states, seq_idx, dt_limit,
              return_final_states, activation, rmsnorm_weight, rmsnorm_eps, outproj_weight, outproj_bias, headdim,
              ngroups, norm_before_gate, state_dtype)


def mamba_inner_ref(xz: Tensor, conv1d_weight: Tensor, conv1d_bias: Tensor | None, x_proj_weight: Tensor,
                    delta_proj_weight: Tensor, out_proj_weight: Tensor, out_proj_bias: Tensor | None, A: Tensor,
                    B: Tensor | None = None, C: Tensor | None = None, D: Tensor | None = None,
                    delta_bias: Tensor | None = None, B_proj_bias: Tensor | None = None,
                    C_proj_bias: Tensor | None = None, delta_softplus: bool = True) -> Tensor:
    """`mamba_inner` composed from the reference ops (mamba-ssm's `mamba_inner_ref`, real A only)."""
    rank, N = delta_proj_weight.shape[1], A.shape[-1]
    x, z = xz.chunk(2, dim=1)
    weight = conv1d_weight.reshape(conv1d_weight.shape[0], -1)  # (d, 1, w) as stored in nn.Conv1d, or (d, w)
    x = causal_conv1d_ref(x, weight, conv1d_bias, activation="silu")
    x_dbl = F.linear(x.transpose(1, 2), x_proj_weight)  # (b, L, rank + 2N)
    delta = F.linear(x_dbl[..., :rank], delta_proj_weight).transpose(1, 2)
    if B is None:
        B = x_dbl[..., rank:rank + N] + (0 if B_proj_bias is None else B_proj_bias.to(x_dbl.dtype))
        B = B.transpose(1, 2)
    if C is None:
        C = x_dbl[..., -N:] + (0 if C_proj_bias is None else C_proj_bias.to(x_dbl.dtype))
        C = C.transpose(1, 2)
    y = selective_scan_ref(x, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)


def mamba_split_conv1d_scan_ref(zxbcdt: Tensor, conv1d_weight: Tensor, conv1d_bias: Tensor | None, dt_bias: Tensor,
                                A: Tensor, D: Tensor, chunk_size: int, initial_states: Tensor | None = None,
                                seq_idx: Tensor | None = None, dt_limit: tuple[float, float] = (0.0, INF),
                                return_final_states: bool = False, activation: str | None = "silu",
                                rmsnorm_weight: Tensor | None = None, rmsnorm_eps: float = 1e-6,
                                outproj_weight: Tensor | None = None, outproj_bias: Tensor | None = None,
                                headdim: int | None = None, ngroups: int = 1, norm_before_gate: bool = True):
    """`mamba_split_conv1d_scan` composed from the reference ops, as the kernel computes it: the gated norm is
    taken per group of d_inner // ngroups channels, and any leading non-SSM channels of zxbcdt (2 * d_mlp) go
    through SwiGLU and are prepended to the output."""
    if D.dim() == 1:
        if headdim is None:
            raise ValueError("headdim must be given when D is per head (nheads,)")
        nheads = D.shape[0]
    else:
        nheads, headdim = D.shape
    dim = nheads * headdim
    N = (conv1d_weight.shape[0] - dim) // ngroups // 2
    d_mlp = (zxbcdt.shape[-1] - 2 * dim - 2 * ngroups * N - nheads) // 2
    if d_mlp < 0:
        raise ValueError(
            f"zxbcdt has {zxbcdt.shape[-1]} channels, fewer than 2 * {dim} + 2 * {ngroups} * {N} + {nheads}"
        )
    zx0, z, xBC, dt = zxbcdt.split([2 * d_mlp, dim, dim + 2 * ngroups * N, nheads], dim=-1)
    weight = conv1d_weight.reshape(conv1d_weight.shape[0], -1)
    xBC = causal_conv1d_ref(xBC.transpose(1, 2), weight, conv1d_bias, activation=activation).transpose(1, 2)
    x, B, C = xBC.split([dim, ngroups * N, ngroups * N], dim=-1)
    out = ssd_scan_ref(
        x.unflatten(-1, (nheads, headdim)), dt, A, B.unflatten(-1, (ngroups, N)), C.unflatten(-1, (ngroups, N)),
        chunk_size, D=D, z=None if rmsnorm_weight is not None else z.unflatten(-1, (nheads, headdim)),
        dt_bias=dt_bias, initial_states=initial_states, seq_idx=seq_idx, dt_softplus=True, dt_limit=dt_limit,
        return_final_states=return_final_states,
    )
    out, final_states = out if return_final_states else (out, None)
    out = out.flatten(-2)
    if rmsnorm_weight is not None:
        out = rms_norm_gated_ref(out, rmsnorm_weight, z=z, eps=rmsnorm_eps, group_size=dim // ngroups,
                                 norm_before_gate=norm_before_gate)
    if d_mlp:
        gate, up = zx0.float().chunk(2, dim=-1)
        out = torch.cat([(F.silu(gate) * up).to(out.dtype), out], dim=-1)
    if outproj_weight is not None:
        out = F.linear(out, outproj_weight, outproj_bias)
    return (out, final_states) if return_final_states else out
