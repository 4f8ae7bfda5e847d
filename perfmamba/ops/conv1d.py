"""Depthwise causal conv1d (Mamba's short convolution) and its decode update: reference beside causal-conv1d."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from perfmamba.ops import _cuda
from perfmamba.ops.registry import register, resolve

ACTIVATIONS = (None, "silu", "swish")


def _check_activation(activation: str | None) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def causal_conv1d_ref(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None) -> Tensor:
    _check_activation(activation)
    d, w = weight.shape
    if x.shape[1] != d:
        raise ValueError(f"x has {x.shape[1]} channels, weight has {d}")
    L = x.shape[-1]
    out = F.conv1d(x.float(), weight.float()[:, None], None if bias is None else bias.float(), padding=w - 1, groups=d)
    out = out[..., :L]
    return (F.silu(out) if activation else out).to(x.dtype)


def causal_conv1d_update_ref(
    x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None
) -> Tensor:
    """x (b, d): shifts it into conv_state (b, d, w) in place and returns this step's output (b, d)."""
    _check_activation(activation)
    conv_state.copy_(conv_state.roll(shifts=-1, dims=-1))
    conv_state[:, :, -1] = x
    out = (conv_state.float() * weight.float()).sum(-1)
    if bias is not None:
        out = out + bias.float()
    return (F.silu(out) if activation else out).to(x.dtype)


def _causal_conv1d_cuda(x, weight, bias=None, activation=None):
    return _cuda.kernel("causal_conv1d")(x, weight, bias, activation=activation)


def _causal_conv1d_update_cuda(x, conv_state, weight, bias=None, activation=None):
    return _cuda.kernel("causal_conv1d_update")(x, conv_state, weight, bias, activation)


register("causal_conv1d", "reference", causal_conv1d_ref)
register("causal_conv1d", "cuda", _causal_conv1d_cuda, availability=_cuda.unavailable("causal_conv1d"))
register("causal_conv1d_update", "reference", causal_conv1d_update_ref)
register(
    "causal_conv1d_update", "cuda", _causal_conv1d_update_cuda, availability=_cuda.unavailable("causal_conv1d_update")
)


def causal_conv1d(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None, *, backend: str = "auto"
) -> Tensor:
    """causal-conv1d's `causal_conv1d_fn`: x (b, d, L), weight (d, w), bias (d,); activation None or "silu"."""
    _, fn = resolve("causal_conv1d", backend, x)
    return fn(x, weight, bias, activation)


def causal_conv1d_update(
    x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None,
    *, backend: str = "auto",
) -> Tensor:
    """causal-conv1d's `causal_conv1d_update`: one decode step, conv_state (b, d, w) updated in place."""
    _, fn = resolve("causal_conv1d_update", backend, x)
    return fn(x, conv_state, weight, bias, activation)
