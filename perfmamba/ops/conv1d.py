"""Depthwise causal conv1d (Mamba's short convolution) and its decode update: reference beside causal-conv1d."""

from __future__ import annotations

import torch
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
    """x (b, d) or (b, d, L) new inputs: shifts them into conv_state (b, d, state_len >= w - 1) in place and
    returns their outputs, (b, d) or (b, d, L)."""
    _check_activation(activation)
    d, w = weight.shape
    if x.dim() not in (2, 3) or x.shape[1] != d or conv_state.shape[:2] != x.shape[:2]:
        raise ValueError(
            f"x must be (b, d={d}) or (b, d, L) and conv_state (b, d, state_len); "
            f"got x {tuple(x.shape)}, conv_state {tuple(conv_state.shape)}"
        )
    state_len = conv_state.shape[-1]
    if state_len < w - 1:
        raise ValueError(f"conv_state must hold at least width - 1 = {w - 1} steps, got {state_len}")
    steps = x if x.dim() == 3 else x.unsqueeze(-1)
    window = torch.cat([conv_state.float(), steps.float()], dim=-1)
    conv_state.copy_(window[..., -state_len:])
    out = F.conv1d(window[..., -(w - 1 + steps.shape[-1]):], weight.float()[:, None], groups=d)
    if bias is not None:
        out = out + bias.float()[:, None]
    out = (F.silu(out) if activation else out).to(x.dtype)
    return out if x.dim() == 3 else out.squeeze(-1)


def _causal_conv1d_cuda(x, weight, bias=None, activation=None):
    return _cuda.kernel("causal_conv1d")(x, weight, bias, activation=activation)


def _causal_conv1d_update_cuda(x, conv_state, weight, bias=None, activation=None):
    return _cuda.kernel("causal_conv1d_update")(x, conv_state, weight, bias, activation=activation)


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
    return fn(x, weight, bias, activation=activation)


def causal_conv1d_update(
    x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None,
    *, backend: str = "auto",
) -> Tensor:
    """causal-conv1d's `causal_conv1d_update`: x (b, d) (or (b, d, L) for several steps), conv_state (b, d, w)
    updated in place (shifted left, x appended); returns this step's output (b, d)."""
    _, fn = resolve("causal_conv1d_update", backend, x)
    return fn(x, conv_state, weight, bias, activation=activation)
