"""Mamba-2 mixer (SSD), parameter-compatible with mamba-ssm's `Mamba2` (rmsnorm=True, D per head, no MLP part).

in_proj's output rows are [z (d_inner) | x (d_inner) | B (ngroups*N) | C (ngroups*N) | dt (nheads)], and conv1d
runs over [x | B | C]. Pruning slices the B and C rows of both, so d_state is read off conv1d's channel count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perfmamba import ops
from perfmamba.models.common import GatedRMSNorm, LayerCache, MixerBase, init_dt_bias
from perfmamba.models.components import span


@dataclass
class Mamba2ScanInputs:
    """What the SSD scan of one layer consumes (for calibration): shapes as `ops.ssd_scan`."""

    x: Tensor  # (b, L, h, p), after conv + SiLU
    dt: Tensor  # (b, L, h), before dt_bias and softplus
    A: Tensor  # (h,), negative
    B: Tensor  # (b, L, g, N)
    C: Tensor  # (b, L, g, N)
    D: Tensor  # (h,)
    dt_bias: Tensor  # (h,)


class Mamba2Mixer(MixerBase):
    version = 2

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        chunk_size: int = 256,
        layer_idx: int | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_conv, self.layer_idx = d_model, d_conv, layer_idx
        self.d_inner = expand * d_model
        self.headdim, self.ngroups, self.chunk_size = headdim, ngroups, chunk_size
        if self.d_inner % headdim:
            raise ValueError(f"d_inner={self.d_inner} must be a multiple of headdim={headdim}")
        self.nheads = self.d_inner // headdim
        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=False, **factory)
        conv_dim = self.d_inner + 2 * ngroups * d_state
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1, bias=True, **factory)
        self.dt_bias = nn.Parameter(init_dt_bias(self.nheads, device))
        A = torch.empty(self.nheads, dtype=torch.float32, device=device).uniform_(1, 16)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.nheads, device=device))
        self.norm = GatedRMSNorm(self.d_inner, group_size=self.d_inner // ngroups, eps=1e-5, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False, **factory)

    @property
    def d_state(self) -> int:
        return (self.conv1d.weight.shape[0] - self.d_inner) // (2 * self.ngroups)

    @property
    def A(self) -> Tensor:
        return -torch.exp(self.A_log.float())

    def _split_in_proj(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        gn = self.ngroups * self.d_state
        return torch.split(zxbcdt, [self.d_inner, self.d_inner + 2 * gn, self.nheads], dim=-1)

    def _split_xBC(self, xBC: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., conv_dim) -> x (..., h, p), B and C (..., g, N)."""
        gn = self.ngroups * self.d_state
        x, B, C = torch.split(xBC, [self.d_inner, gn, gn], dim=-1)
        return (
            x.unflatten(-1, (self.nheads, self.headdim)),
            B.unflatten(-1, (self.ngroups, self.d_state)),
            C.unflatten(-1, (self.ngroups, self.d_state)),
        )

    def _conv(self, xBC: Tensor) -> Tensor:
        w = self.conv1d.weight.squeeze(1)
        return ops.causal_conv1d(xBC.transpose(1, 2), w, self.conv1d.bias, "silu", backend=self.backend).transpose(1, 2)

    def scan_inputs(self, hidden: Tensor) -> Mamba2ScanInputs:
        _, xBC, dt = self._split_in_proj(self.in_proj(hidden))
        x, B, C = self._split_xBC(self._conv(xBC))
        return Mamba2ScanInputs(x, dt, self.A, B, C, self.D.float(), self.dt_bias.float())

    def forward(self, hidden: Tensor, cache: LayerCache | None = None) -> Tensor:
        if self.use_fused(hidden, cache):
            with span("mixer_fused"):
                return self._forward_fused(hidden)
        b, L, _ = hidden.shape
        with span("in_proj"):
            z, xBC, dt = self._split_in_proj(self.in_proj(hidden))
        if cache is not None:
            cache.conv_state.copy_(F.pad(xBC.transpose(1, 2), (self.d_conv - L, 0)))
        with span("conv1d"):
            xBC = self._conv(xBC)
        x, B, C = self._split_xBC(xBC)
        with span("ssm_scan"):
            y = ops.ssd_scan(
                x, dt, self.A, B, C, self.chunk_size, D=self.D.float(), dt_bias=self.dt_bias.float(),
                dt_softplus=True, return_final_states=cache is not None, backend=self.backend,
            )
        if cache is not None:
            y, final_state = y
            cache.ssm_state.copy_(final_state)
        with span("gated_norm"):
            y = self.norm(y.reshape(b, L, self.d_inner), z)
        with span("out_proj"):
            return self.out_proj(y)

    def _forward_fused(self, hidden: Tensor) -> Tensor:
        return ops.mamba_split_conv1d_scan(
            self.in_proj(hidden), self.conv1d.weight.squeeze(1), self.conv1d.bias, self.dt_bias, self.A,
            D=self.D, chunk_size=self.chunk_size, activation="silu", rmsnorm_weight=self.norm.weight,
            rmsnorm_eps=self.norm.eps, outproj_weight=self.out_proj.weight, outproj_bias=self.out_proj.bias,
            headdim=self.headdim, ngroups=self.ngroups, norm_before_gate=False,
        )

    def step(self, hidden: Tensor, cache: LayerCache) -> Tensor:
        p, n = self.headdim, self.d_state
        with span("in_proj"):
            z, xBC, dt = self._split_in_proj(self.in_proj(hidden))
        with span("conv1d"):
            xBC = ops.causal_conv1d_update(
                xBC, cache.conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias, "silu", backend=self.backend
            )
        x, B, C = self._split_xBC(xBC)
        with span("ssm_scan"):
            # The decode kernel is written for per-(head, channel) parameters; Mamba-2's are per head.
            y = ops.selective_state_update(
                cache.ssm_state, x, dt.unsqueeze(-1).expand(-1, -1, p),
                self.A[:, None, None].expand(-1, p, n), B, C,
                D=self.D.float()[:, None].expand(-1, p), dt_bias=self.dt_bias.float()[:, None].expand(-1, p),
                dt_softplus=True, backend=self.backend,
            )
        with span("gated_norm"):
            y = self.norm(y.reshape(y.shape[0], self.d_inner), z)
        with span("out_proj"):
            return self.out_proj(y)

    def allocate_cache(self, batch: int, dtype: torch.dtype | None = None) -> LayerCache:
        w = self.out_proj.weight
        dtype = dtype or w.dtype
        return LayerCache(
            # Channel-last, as mamba-ssm's Mamba2 allocates it (its prefill writes the state from a channel-last xBC).
            conv_state=torch.zeros(batch, self.d_conv, self.conv1d.weight.shape[0], device=w.device,
                                   dtype=dtype).transpose(1, 2),
            ssm_state=torch.zeros(batch, self.nheads, self.headdim, self.d_state, device=w.device, dtype=dtype),
        )
