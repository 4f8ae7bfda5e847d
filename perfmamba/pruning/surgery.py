"""Surgery: apply kept-state indices to a model, removing the other states or masking them.

`remove` leaves an ordinary model with smaller per-layer d_state (new, correctly sized modules and
`config.layer_d_state`), which runs on the same kernels, saves and loads; with the same d_state in every layer
it is a plain mamba-ssm checkpoint. `mask` keeps every shape and zeroes the pruned states' B and C.
"""

from __future__ import annotations

from torch import Tensor, nn

from perfmamba.checks import check_choice
from perfmamba.pruning import layout
from perfmamba.pruning.calibration import mixers_of
from perfmamba.pruning.config import PRUNE_MODES


def check_kept(model: nn.Module, kept: list[Tensor]) -> None:
    """Raise ValueError unless `kept` holds, per layer, sorted unique in-range indices, the same count per group."""
    mixers = mixers_of(model)
    if len(kept) != len(mixers):
        raise ValueError(f"kept indices for {len(kept)} layers, but the model has {len(mixers)} SSM layers")
    for i, (mixer, k) in enumerate(zip(mixers, kept)):
        G, N = layout.ngroups(mixer), mixer.d_state
        if k.dim() != 2 or k.shape[0] != G:
            raise ValueError(f"layer {i}: kept indices must be (ngroups={G}, k), got shape {tuple(k.shape)}")
        if k.shape[1] < 1:
            raise ValueError(f"layer {i}: every layer must keep at least one state, got 0")
        if k.dtype.is_floating_point or k.dtype.is_complex:
            raise ValueError(f"layer {i}: kept indices must be integers, got dtype {k.dtype}")
        if int(k.min()) < 0 or int(k.max()) >= N:
            raise ValueError(f"layer {i}: kept indices must be in [0, {N}), got [{int(k.min())}, {int(k.max())}]")
        if k.shape[1] > 1 and not bool((k[:, 1:] > k[:, :-1]).all()):
            raise ValueError(f"layer {i}: kept indices must be strictly increasing in each group")


def apply(model: nn.Module, kept: list[Tensor], mode: str = "remove") -> nn.Module:
    """Prune `model` in place to the states in `kept` (per layer (ngroups, k), sorted) and return it.

    remove: slice the other states out (d_state becomes k per layer; `model.config` follows). mask: zero them."""
    check_choice("mode", mode, PRUNE_MODES)
    check_kept(model, kept)
    mixers = mixers_of(model)
    for mixer, k in zip(mixers, kept):
        if mode == "mask":
            layout.mask_states(mixer, k.long())
        else:
            layout.remove_states(mixer, k.long())
    if mode == "remove" and hasattr(model, "config"):
        d_states = tuple(m.d_state for m in mixers)
        if len(set(d_states)) == 1:
            model.config = model.config.replace(d_state=d_states[0], layer_d_state=None)
        else:
            # As a checkpoint stores it (config.json holds the largest), so a reload compares equal.
            model.config = model.config.replace(d_state=max(d_states), layer_d_state=d_states)
    return model
