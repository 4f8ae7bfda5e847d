"""Where a mixer keeps its states: the only place pruning tells Mamba-1 from Mamba-2.

Everything else in `perfmamba.pruning` works on one shape: a layer has `ngroups` groups of `d_state` states,
each state n of group g fed by one B row and read by one C row of a projection, and the scan's recurrence runs
over `units` (Mamba-1: the d_inner channels, one group; Mamba-2: the heads, `nheads / ngroups` per group) of
`per_unit` elements each (Mamba-1: 1; Mamba-2: headdim):

    h[u, p, n] <- exp(dt[u] * A[u, n]) * h[u, p, n] + dt[u] * x[u, p] * B[g(u), n]
    y[u, p]    += C[g(u), n] * h[u, p, n]

Mamba-1's A varies with n (A is (d_inner, N)); Mamba-2's is one scalar per head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perfmamba.models.common import MixerBase
from perfmamba.models.mamba1 import Mamba1Mixer
from perfmamba.models.mamba2 import Mamba2Mixer


@dataclass
class ScanStream:
    """One layer's scan inputs in the common layout (fp32, batch-major, time second).

    delta: (b, L, units) after bias and softplus; x: (b, L, units, per_unit); A: (units, N) or (units, 1);
    B, C: (b, L, ngroups, N)."""

    delta: Tensor
    x: Tensor
    A: Tensor
    B: Tensor
    C: Tensor


def check_mixer(mixer: nn.Module) -> MixerBase:
    if not isinstance(mixer, (Mamba1Mixer, Mamba2Mixer)):
        raise TypeError(f"expected a Mamba1Mixer or Mamba2Mixer, got {type(mixer).__name__}")
    return mixer


def ngroups(mixer: MixerBase) -> int:
    return 1 if mixer.version == 1 else mixer.ngroups


def units(mixer: MixerBase) -> int:
    return mixer.d_inner if mixer.version == 1 else mixer.nheads


def per_unit(mixer: MixerBase) -> int:
    return 1 if mixer.version == 1 else mixer.headdim


def scan_stream(mixer: MixerBase, hidden: Tensor) -> ScanStream:
    """The inputs of `mixer`'s scan for `hidden` (b, L, d_model), in the common layout."""
    inp = mixer.scan_inputs(hidden)
    if mixer.version == 1:
        delta = F.softplus(inp.delta.float() + inp.delta_bias.float()[:, None]).transpose(1, 2)
        return ScanStream(
            delta=delta,
            x=inp.u.float().transpose(1, 2).unsqueeze(-1),
            A=inp.A.float(),
            B=inp.B.float().transpose(1, 2).unsqueeze(2),
            C=inp.C.float().transpose(1, 2).unsqueeze(2),
        )
    return ScanStream(
        delta=F.softplus(inp.dt.float() + inp.dt_bias.float()),
        x=inp.x.float(),
        A=inp.A.float()[:, None],
        B=inp.B.float(),
        C=inp.C.float(),
    )


def state_rows(mixer: MixerBase) -> tuple[nn.Linear, Tensor, Tensor]:
    """The projection that computes B and C, and the rows of its weight that hold them: (ngroups, N) each.

    Mamba-1: x_proj rows are [dt (dt_rank) | B (N) | C (N)]. Mamba-2: in_proj rows are
    [z (d_inner) | x (d_inner) | B (ngroups * N) | C (ngroups * N) | dt (nheads)]."""
    N, G = mixer.d_state, ngroups(mixer)
    start = mixer.dt_rank if mixer.version == 1 else 2 * mixer.d_inner
    rows = torch.arange(G * N).reshape(G, N)
    proj = mixer.x_proj if mixer.version == 1 else mixer.in_proj
    return proj, start + rows, start + G * N + rows


def state_channels(mixer: MixerBase) -> tuple[Tensor, Tensor] | None:
    """The conv1d channels that carry B and C (Mamba-2: the conv runs over [x | B | C]); None for Mamba-1,
    whose conv sees only x."""
    if mixer.version == 1:
        return None
    N, G = mixer.d_state, mixer.ngroups
    rows = torch.arange(G * N).reshape(G, N)
    return mixer.d_inner + rows, mixer.d_inner + G * N + rows


def decay_magnitude(mixer: MixerBase) -> Tensor:
    """|A| as (units, N) for Mamba-1, (units, 1) for Mamba-2 (one decay per head, shared by its states)."""
    A = mixer.A.detach().float().abs()
    return A if mixer.version == 1 else A[:, None]


def dropped(kept: Tensor, N: int) -> Tensor:
    """(ngroups, N) bool: True where a state is not in `kept` (ngroups, k)."""
    mask = torch.ones(kept.shape[0], N, dtype=torch.bool)
    mask.scatter_(1, kept.cpu(), False)
    return mask


# Surgery --------------------------------------------------------------------------------------------------
def _linear_rows(old: nn.Linear, rows: Tensor) -> nn.Linear:
    w = old.weight
    new = nn.Linear(old.in_features, len(rows), bias=old.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w[rows.to(w.device)])
        if old.bias is not None:
            new.bias.copy_(old.bias[rows.to(w.device)])
    new.requires_grad_(w.requires_grad)
    return new


def _conv_channels(old: nn.Conv1d, channels: Tensor) -> nn.Conv1d:
    w = old.weight
    c, k = len(channels), old.kernel_size[0]
    new = nn.Conv1d(c, c, k, groups=c, padding=old.padding, bias=old.bias is not None, device=w.device, dtype=w.dtype)
    idx = channels.to(w.device)
    with torch.no_grad():
        new.weight.copy_(w[idx])
        if old.bias is not None:
            new.bias.copy_(old.bias[idx])
    new.requires_grad_(w.requires_grad)
    return new


def _keep_all_but(total: int, drop: Tensor) -> Tensor:
    keep = torch.ones(total, dtype=torch.bool)
    keep[drop] = False
    return keep.nonzero().squeeze(1)


def remove_states(mixer: MixerBase, kept: Tensor) -> None:
    """Slice every state not in `kept` (ngroups, k; sorted) out of `mixer`'s weights, in place: the B and C
    rows of the projection, their conv1d channels (Mamba-2) and A_log's columns (Mamba-1). Rows of group g are
    sliced with group g's indices, so groups may keep different states."""
    drop = dropped(kept, mixer.d_state)
    proj, b_rows, c_rows = state_rows(mixer)
    channels = state_channels(mixer)
    new_proj = _linear_rows(proj, _keep_all_but(proj.out_features, torch.cat([b_rows[drop], c_rows[drop]])))
    if mixer.version == 1:
        with torch.no_grad():
            a_log = mixer.A_log
            new_a = nn.Parameter(a_log[:, kept[0].to(a_log.device)].clone(), requires_grad=a_log.requires_grad)
        mixer.x_proj = new_proj
        mixer.A_log = new_a
    else:
        conv = mixer.conv1d
        b_ch, c_ch = channels
        mixer.in_proj = new_proj
        mixer.conv1d = _conv_channels(conv, _keep_all_but(conv.out_channels, torch.cat([b_ch[drop], c_ch[drop]])))


def mask_states(mixer: MixerBase, kept: Tensor) -> None:
    """Zero every state not in `kept` in place: B_n = C_n = 0 for all time, so h_n stays 0 and adds nothing.
    Mamba-2's conv1d weight and bias of those channels are zeroed too, since silu(bias) != 0 otherwise."""
    drop = dropped(kept, mixer.d_state)
    proj, b_rows, c_rows = state_rows(mixer)
    rows = torch.cat([b_rows[drop], c_rows[drop]]).to(proj.weight.device)
    with torch.no_grad():
        proj.weight[rows] = 0
        if proj.bias is not None:
            proj.bias[rows] = 0
        channels = state_channels(mixer)
        if channels is not None:
            ch = torch.cat([channels[0][drop], channels[1][drop]]).to(proj.weight.device)
            mixer.conv1d.weight[ch] = 0
            if mixer.conv1d.bias is not None:
                mixer.conv1d.bias[ch] = 0
