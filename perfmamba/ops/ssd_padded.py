"""Mamba-2 prefill at a pruned N' through mamba-ssm's SSD kernels, with the state dimension zero-padded to a
multiple of 16: backend "cuda_padded" of `ssd_scan` and `mamba_split_conv1d_scan`.

Zero columns of B and C (and of the initial state) leave every output unchanged: a padded state column starts
at 0 and is driven by B = 0, so it stays 0, and C = 0 reads nothing from it. What changes is the layout: at
N' = 116 each row of B, C and the states is 232 bytes, not a multiple of 16, and the kernels' loads lose their
vector width (docs/results/ssd_dstate.md). Padding costs one copy of B and C (of zxbcdt for the fused op).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from perfmamba.ops import _cuda
from perfmamba.ops.fused import _mamba_split_conv1d_scan_cuda
from perfmamba.ops.registry import register
from perfmamba.ops.ssd import _ssd_scan_cuda

MULTIPLE = 16


def padded(n: int, multiple: int = MULTIPLE) -> int:
    """N' rounded up to `multiple`."""
    if n < 1 or multiple < 1:
        raise ValueError(f"need d_state >= 1 and multiple >= 1, got d_state={n}, multiple={multiple}")
    return -(-n // multiple) * multiple


def _pad_last(t: Tensor | None, n: int) -> Tensor | None:
    return t if t is None or t.shape[-1] == n else F.pad(t, (0, n - t.shape[-1]))


def pad_ssd_scan(fn: Callable, multiple: int = MULTIPLE) -> Callable:
    """`fn` with ssd_scan's signature, run at N' padded to `multiple`; final states cut back to N'."""

    @functools.wraps(fn)
    def run(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
            dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False):
        n = B.shape[-1]
        n_pad = padded(n, multiple)
        out = fn(x, dt, A, _pad_last(B, n_pad), _pad_last(C, n_pad), chunk_size, D=D, z=z, dt_bias=dt_bias,
                 initial_states=_pad_last(initial_states, n_pad), seq_idx=seq_idx, dt_softplus=dt_softplus,
                 dt_limit=dt_limit, return_final_states=return_final_states)
        return (out[0], out[1][..., :n]) if return_final_states else out

    return run


def pad_split_conv1d_scan(fn: Callable, multiple: int = MULTIPLE) -> Callable:
    """`fn` with mamba_split_conv1d_scan's signature (positional, as the op passes them), at N' padded to
    `multiple`: zero B and C channels inserted into zxbcdt and zero rows into the conv weight and bias (the conv
    of a zero channel with zero weights and bias is 0, and silu(0) = 0)."""

    @functools.wraps(fn)
    def run(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, initial_states=None, seq_idx=None,
            dt_limit=(0.0, float("inf")), return_final_states=False, activation="silu", rmsnorm_weight=None,
            rmsnorm_eps=1e-6, outproj_weight=None, outproj_bias=None, headdim=None, ngroups=1,
            norm_before_gate=True, state_dtype=None):
        nheads = D.shape[0]
        dim = nheads * (headdim if D.dim() == 1 else D.shape[1])
        n = (conv1d_weight.shape[0] - dim) // ngroups // 2
        n_pad = padded(n, multiple)
        if n_pad != n:
            d_mlp = (zxbcdt.shape[-1] - 2 * dim - 2 * ngroups * n - nheads) // 2
            head, x, B, C, dt = zxbcdt.split([2 * d_mlp + dim, dim, ngroups * n, ngroups * n, nheads], dim=-1)
            B, C = (_pad_last(t.unflatten(-1, (ngroups, n)), n_pad).flatten(-2) for t in (B, C))
            zxbcdt = torch.cat([head, x, B, C, dt], dim=-1)

            def pad_channels(w: Tensor) -> Tensor:  # (dim + 2 * ngroups * n, ...) -> padded B and C rows
                wx, wB, wC = w.split([dim, ngroups * n, ngroups * n])
                wB, wC = (F.pad(t.unflatten(0, (ngroups, n)).movedim(1, -1), (0, n_pad - n)).movedim(-1, 1)
                          .flatten(0, 1) for t in (wB, wC))
                return torch.cat([wx, wB, wC])

            conv1d_weight = pad_channels(conv1d_weight)
            conv1d_bias = None if conv1d_bias is None else pad_channels(conv1d_bias)
        out = fn(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, _pad_last(initial_states, n_pad),
                 seq_idx, dt_limit, return_final_states, activation, rmsnorm_weight, rmsnorm_eps, outproj_weight,
                 outproj_bias, headdim, ngroups, norm_before_gate, state_dtype)
        return (out[0], out[1][..., :n]) if return_final_states else out

    return run


register("ssd_scan", "cuda_padded", pad_ssd_scan(_ssd_scan_cuda), availability=_cuda.unavailable("ssd_scan"))
register("mamba_split_conv1d_scan", "cuda_padded", pad_split_conv1d_scan(_mamba_split_conv1d_scan_cuda),
         availability=_cuda.unavailable("mamba_split_conv1d_scan"))
