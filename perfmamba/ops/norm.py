"""RMSNorm (block and final norms, alone or fused with the residual add) and Mamba-2's gated RMSNorm: references
beside mamba-ssm's Triton kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from perfmamba.ops import _cuda
from perfmamba.ops.registry import register, resolve


def rms_norm_ref(x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    xf = x.float()
    out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return out.to(x.dtype)


def add_rms_norm_ref(
    x: Tensor, residual: Tensor | None, weight: Tensor, eps: float = 1e-5, residual_in_fp32: bool = False
) -> tuple[Tensor, Tensor]:
    """The pre-norm of a residual block as mamba-ssm's fused kernel computes it: the sum s = x + residual in fp32,
    stored in residual's dtype (fp32 when there is no residual yet and `residual_in_fp32`, else x's), and
    RMSNorm(s) * weight in x's dtype, normalised from the fp32 sum rather than the stored one."""
    s = x.float() if residual is None else x.float() + residual.float()
    residual_dtype = residual.dtype if residual is not None else (torch.float32 if residual_in_fp32 else x.dtype)
    out = s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return out.to(x.dtype), s.to(residual_dtype)


def rms_norm_gated_ref(
    x: Tensor, weight: Tensor, z: Tensor | None = None, eps: float = 1e-5, group_size: int | None = None,
    norm_before_gate: bool = False,
) -> Tensor:
    """norm_before_gate=False: RMSNorm(x * silu(z)) * weight; True: RMSNorm(x) * weight * silu(z).
    The mean square is taken per group of `group_size` channels (Mamba-2 with ngroups > 1)."""
    dtype, d = x.dtype, x.shape[-1]
    group_size = group_size or d
    if d % group_size:
        raise ValueError(f"channels ({d}) must be a multiple of group_size ({group_size})")
    if z is not None and z.shape != x.shape:
        raise ValueError(f"z must have x's shape {tuple(x.shape)}, got {tuple(z.shape)}")
    xf = x.float()
    if z is not None and not norm_before_gate:
        xf = xf * F.silu(z.float())
    xg = xf.unflatten(-1, (d // group_size, group_size))
    out = (xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + eps)).flatten(-2) * weight.float()
    if z is not None and norm_before_gate:
        out = out * F.silu(z.float())
    return out.to(dtype)


def _rms_norm_cuda(x, weight, eps=1e-5):
    return _cuda.kernel("rms_norm")(x, weight, None, eps=eps)


def _add_rms_norm_cuda(x, residual, weight, eps=1e-5, residual_in_fp32=False):
    return _cuda.kernel("rms_norm")(
        x, weight, None, residual=residual, eps=eps, prenorm=True, residual_in_fp32=residual_in_fp32
    )


def _rms_norm_gated_cuda(x, weight, z=None, eps=1e-5, group_size=None, norm_before_gate=False):
    return _cuda.kernel("rms_norm_gated")(
        x, weight, None, z=z, eps=eps, group_size=group_size, norm_before_gate=norm_before_gate
    )


register("rms_norm", "reference", rms_norm_ref)
register("rms_norm", "cuda", _rms_norm_cuda, availability=_cuda.unavailable("rms_norm"))
register("add_rms_norm", "reference", add_rms_norm_ref)
register("add_rms_norm", "cuda", _add_rms_norm_cuda, availability=_cuda.unavailable("rms_norm"))
register("rms_norm_gated", "reference", rms_norm_gated_ref)
register("rms_norm_gated", "cuda", _rms_norm_gated_cuda, availability=_cuda.unavailable("rms_norm_gated"))


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-5, *, backend: str = "auto") -> Tensor:
    """RMSNorm over the last dim (the blocks' norms and norm_f): x * rsqrt(mean(x^2) + eps) * weight in fp32,
    returned in x's dtype."""
    _, fn = resolve("rms_norm", backend, x)
    return fn(x, weight, eps=eps)


def add_rms_norm(
    x: Tensor, residual: Tensor | None, weight: Tensor, eps: float = 1e-5, residual_in_fp32: bool = False, *,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """A block's residual add and pre-norm in one kernel, as mamba-ssm's Block runs them (`rms_norm_fn` with
    `residual`, `prenorm=True`): returns (RMSNorm(x + residual) * weight, x + residual). `residual` None is the
    first block's (the sum is x); `residual_in_fp32` keeps that new residual stream in fp32."""
    _, fn = resolve("add_rms_norm", backend, x)
    return fn(x, residual, weight, eps=eps, residual_in_fp32=residual_in_fp32)


def rms_norm_gated(
    x: Tensor, weight: Tensor, z: Tensor | None = None, eps: float = 1e-5, group_size: int | None = None,
    norm_before_gate: bool = False, *, backend: str = "auto",
) -> Tensor:
    """mamba-ssm's `layernorm_gated.rmsnorm_fn` (Mamba-2's RMSNormGated) without bias: x, z (..., d), weight (d,);
    the mean square is taken per group of `group_size` channels (None: all d)."""
    _, fn = resolve("rms_norm_gated", backend, x)
    return fn(x, weight, z=z, eps=eps, group_size=group_size, norm_before_gate=norm_before_gate)
