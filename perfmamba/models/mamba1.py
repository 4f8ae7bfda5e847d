"""Mamba-1 mixer (selective SSM), parameter-compatible with mamba-ssm's `Mamba` (mamba_simple.py).

x_proj's output rows are [dt (dt_rank) | B (d_state) | C (d_state)]; A_log is (d_inner, d_state). Pruning
slices exactly those, so d_state is read off A_log rather than stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perfmamba import ops
from perfmamba.models.common import LayerCache, MixerBase, init_dt_bias
from perfmamba.models.components import span


@dataclass
class Mamba1ScanInputs:
    """What the selective scan of one layer consumes (for calibration): shapes as `ops.selective_scan`."""

    u: Tensor  # (b, d, L), after conv + SiLU
    delta: Tensor  # (b, d, L), before delta_bias and softplus
    A: Tensor  # (d, N), negative
    B: Tensor  # (b, N, L)
    C: Tensor  # (b, N, L)
    D: Tensor  # (d,)
    z: Tensor  # (b, d, L)
    delta_bias: Tensor  # (d,)


class Mamba1Mixer(MixerBase):
    version = 1

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        layer_idx: int | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_conv, self.layer_idx = d_model, d_conv, layer_idx
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank if dt_rank is not None else math.ceil(d_model / 16)
        d_inner = self.d_inner
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False, **factory)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=True, **factory)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True, **factory)
        # S4D-real initialisation, as mamba-ssm: A_n = -(n + 1) for every channel.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner, device=device))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False, **factory)
        self._init_dt()

    def _init_dt(self) -> None:
        with torch.no_grad():
            std = self.dt_rank**-0.5
            self.dt_proj.weight.uniform_(-std, std)
            self.dt_proj.bias.copy_(init_dt_bias(self.d_inner, self.dt_proj.bias.device))

    @property
    def d_state(self) -> int:
        return self.A_log.shape[1]

    @property
    def A(self) -> Tensor:
        return -torch.exp(self.A_log.float())

    def _delta_B_C(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x_proj + dt_proj (without its bias, which the scan adds): (b, d, L) -> delta (b, d, L), B, C (b, N, L)."""
        x_dbl = self.x_proj(u.transpose(1, 2))  # (b, L, r + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)
        return delta, B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()

    def _conv(self, x: Tensor) -> Tensor:
        return ops.causal_conv1d(x, self.conv1d.weight.squeeze(1), self.conv1d.bias, "silu", backend=self.backend)

    def scan_inputs(self, hidden: Tensor) -> Mamba1ScanInputs:
        xz = self.in_proj(hidden).transpose(1, 2)
        x, z = xz.chunk(2, dim=1)
        u = self._conv(x)
        delta, B, C = self._delta_B_C(u)
        return Mamba1ScanInputs(u, delta, self.A, B, C, self.D.float(), z, self.dt_proj.bias.float())

    def forward(self, hidden: Tensor, cache: LayerCache | None = None) -> Tensor:
        if self.use_fused(hidden, cache):
            with span("mixer_fused"):
                return self._forward_fused(hidden)
        L = hidden.shape[1]
        with span("in_proj"):
            xz = self.in_proj(hidden).transpose(1, 2)
        x, z = xz.chunk(2, dim=1)
        if cache is not None:
            # The decode conv state is the last d_conv inputs, zero-padded when the prompt is shorter.
            cache.conv_state.copy_(F.pad(x, (self.d_conv - L, 0)))
        with span("conv1d"):
            u = self._conv(x)
        with span("x_proj"):
            delta, B, C = self._delta_B_C(u)
        with span("ssm_scan"):
            y = ops.selective_scan(
                u, delta, self.A, B, C, self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(),
                delta_softplus=True, return_last_state=cache is not None, backend=self.backend,
            )
        if cache is not None:
            y, last_state = y
            cache.ssm_state.copy_(last_state)
        with span("out_proj"):
            return self.out_proj(y.transpose(1, 2))

    def _xz_for_kernel(self, hidden: Tensor) -> Tensor:
        """in_proj(hidden) as (b, 2 * d_inner, L) with unit stride along L, as mamba-ssm's Mamba module computes
        it: `mamba_inner_fn` copies an xz of any other layout (in_proj(hidden).transpose(1, 2) has stride
        2 * d_inner along L), a transposing copy of the layer's largest activation. Measured on an H200 (bf16,
        docs/results/h100.md): with this layout the whole fused forward ran 1.6-1.8x faster than with the copy."""
        b, L, _ = hidden.shape
        xz = (self.in_proj.weight @ hidden.reshape(b * L, -1).T).view(-1, b, L).permute(1, 0, 2)
        return xz if self.in_proj.bias is None else xz + self.in_proj.bias[:, None]

    def _forward_fused(self, hidden: Tensor) -> Tensor:
        xz = self._xz_for_kernel(hidden)
        return ops.mamba_inner(
            xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
            self.out_proj.weight, self.out_proj.bias, self.A, None, None, self.D.float(),
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
        )

    def step(self, hidden: Tensor, cache: LayerCache) -> Tensor:
        with span("in_proj"):
            x, z = self.in_proj(hidden).chunk(2, dim=-1)
        with span("conv1d"):
            u = ops.causal_conv1d_update(
                x, cache.conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias, "silu", backend=self.backend
            )
        with span("x_proj"):
            dt, B, C = torch.split(self.x_proj(u), [self.dt_rank, self.d_state, self.d_state], dim=-1)
            dt = F.linear(dt, self.dt_proj.weight)
        with span("ssm_scan"):
            y = ops.selective_state_update(
                # dt_bias in its own dtype, as mamba-ssm's step passes it: the kernel reads it in fp32 anyway, and
                # a cast here is a kernel per layer and step.
                cache.ssm_state, u, dt, self.A, B, C, self.D, z=z, dt_bias=self.dt_proj.bias,
                dt_softplus=True, backend=self.backend,
            )
        with span("out_proj"):
            return self.out_proj(y)

    def allocate_cache(self, batch: int, dtype: torch.dtype | None = None) -> LayerCache:
        w = self.out_proj.weight
        dtype = dtype or w.dtype
        return LayerCache(
            # (b, d, d_conv) contiguous, as mamba-ssm's Mamba allocates it: causal_conv1d_update ran 14% slower
            # on the channel-last layout Mamba-2 uses (0.089 / 0.078 ms per step for 24 layers, b64, H200).
            conv_state=torch.zeros(batch, self.d_inner, self.d_conv, device=w.device, dtype=dtype),
            ssm_state=torch.zeros(batch, self.d_inner, self.d_state, device=w.device, dtype=dtype),
        )
