"""mamba-ssm's fused production paths, CUDA only: the whole Mamba-1 mixer (`mamba_inner_fn`) and Mamba-2's
conv + SSD + gated norm + out_proj (`mamba_split_conv1d_scan_combined`). Their references are the models' unfused
paths, which call the individual ops."""

from __future__ import annotations

from perfmamba.ops import _cuda
from perfmamba.ops.registry import register, resolve


def _mamba_inner_cuda(*args, **kwargs):
    return _cuda.kernel("mamba_inner")(*args, **kwargs)


def _mamba_split_conv1d_scan_cuda(*args, **kwargs):
    return _cuda.kernel("mamba_split_conv1d_scan")(*args, **kwargs)


register("mamba_inner", "cuda", _mamba_inner_cuda, availability=_cuda.unavailable("mamba_inner"))
register(
    "mamba_split_conv1d_scan", "cuda", _mamba_split_conv1d_scan_cuda,
    availability=_cuda.unavailable("mamba_split_conv1d_scan"),
)


def mamba_inner(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias,
                A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None, C_proj_bias=None,
                delta_softplus=True, *, backend: str = "auto", **kwargs):
    """mamba-ssm's `mamba_inner_fn` (same arguments)."""
    _, fn = resolve("mamba_inner", backend, xz)
    return fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias,
              A, B, C, D, delta_bias, B_proj_bias, C_proj_bias, delta_softplus, **kwargs)


def mamba_split_conv1d_scan(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, *,
                            backend: str = "auto", **kwargs):
    """mamba-ssm's `mamba_split_conv1d_scan_combined` (same arguments)."""
    _, fn = resolve("mamba_split_conv1d_scan", backend, zxbcdt)
    return fn(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, **kwargs)
