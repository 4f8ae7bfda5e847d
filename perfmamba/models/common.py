"""Pieces shared by the Mamba-1 and Mamba-2 mixers and the LM: norms, the decode cache, path selection."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from perfmamba import ops

Path = Literal["auto", "unfused", "fused"]
PATHS: tuple[str, ...] = ("auto", "unfused", "fused")


@dataclass
class LayerCache:
    """One layer's decode state: the last d_conv conv inputs and the SSM state h."""

    conv_state: Tensor  # (b, conv channels, d_conv)
    ssm_state: Tensor  # Mamba-1 (b, d_inner, N); Mamba-2 (b, nheads, headdim, N)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.conv_state, self.ssm_state))


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d, device=device, dtype=dtype))
        self.backend = "auto"

    def forward(self, x: Tensor) -> Tensor:
        return ops.rms_norm(x, self.weight, self.eps, backend=self.backend)

    def add_forward(self, x: Tensor, residual: Tensor | None, residual_in_fp32: bool) -> tuple[Tensor, Tensor]:
        """(norm(x + residual), x + residual) in one kernel on CUDA, as mamba-ssm's blocks run their pre-norm:
        apart, the add, a cast and the norm each pass over the residual stream (4 of the 84 ms of a Mamba-1 130m
        prefill at b8 L8192 on an H200, issue 15)."""
        return ops.add_rms_norm(x, residual, self.weight, self.eps, residual_in_fp32, backend=self.backend)


class GatedRMSNorm(nn.Module):
    """Mamba-2's RMSNormGated with norm_before_gate=False: RMSNorm(x * silu(z)) per group of channels."""

    def __init__(self, d: int, group_size: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        self.eps, self.group_size = eps, group_size
        self.weight = nn.Parameter(torch.ones(d, device=device, dtype=dtype))
        self.backend = "auto"

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return ops.rms_norm_gated(
            x, self.weight, z, eps=self.eps, group_size=self.group_size, norm_before_gate=False,
            backend=self.backend,
        )


def init_dt_bias(n: int, device, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4) -> Tensor:
    """mamba-ssm's dt initialisation: softplus(bias) log-uniform in [dt_min, dt_max]."""
    dt = torch.exp(torch.rand(n, device=device) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus


@functools.cache
def fused_kernel_runs(op: str) -> bool:
    """Whether mamba-ssm's fused kernel for `op` can run here; asked once per process (kernels do not appear or
    vanish while it runs), since every forward of every layer on a GPU asks it."""
    from perfmamba.ops.registry import unavailable_reason

    return unavailable_reason(op, "cuda") is None


class MixerBase(nn.Module):
    """Path and backend selection common to both mixers.

    `path`: "unfused" calls one op per component (what the profiler attributes); "fused" calls mamba-ssm's
    production kernel (CUDA only); "auto" takes the fused kernel where mamba-ssm does (CUDA tensors, kernels
    installed, no decode cache being filled) and the unfused ops otherwise.
    `backend`: passed to every op ("auto", "reference", "cuda" or a plug-in name).
    """

    version: int
    d_conv: int

    def __init__(self) -> None:
        super().__init__()
        self.path: Path = "auto"
        self.backend: str = "auto"

    def use_fused(self, hidden: Tensor, cache: LayerCache | None) -> bool:
        if self.path == "unfused":
            return False
        fused_op = "mamba_inner" if self.version == 1 else "mamba_split_conv1d_scan"
        if self.path == "fused":
            if cache is not None:
                raise ValueError("the fused path does not fill a decode cache; use path='unfused' for prefill")
            return True  # the op raises a clear error if the kernel is unavailable
        return cache is None and hidden.is_cuda and self.backend in ("auto", "cuda") and fused_kernel_runs(fused_op)
