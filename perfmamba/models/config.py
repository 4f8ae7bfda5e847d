"""Model configuration and presets.

`ModelConfig` is our typed view of a Mamba language model. It converts to and from mamba-ssm's
`MambaConfig` layout (`config.json`), which mamba-ssm loads into a strict dataclass, so nothing of ours may
appear there: per-layer d_state and other metadata live in a sidecar file (see `checkpoint.py`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

Version = Literal[1, 2]


@dataclass(frozen=True)
class ModelConfig:
    version: Version = 1
    d_model: int = 768
    n_layer: int = 24
    vocab_size: int = 50277
    pad_vocab_size_multiple: int = 8
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None  # Mamba-1 only; None means mamba-ssm's "auto": ceil(d_model / 16)
    headdim: int = 64  # Mamba-2 only
    ngroups: int = 1  # Mamba-2 only
    chunk_size: int = 256  # Mamba-2 only
    norm_epsilon: float = 1e-5
    residual_in_fp32: bool = True
    # Per-layer d_state after pruning; None means every layer has `d_state`.
    layer_d_state: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"version must be 1 or 2, got {self.version!r}")
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand", "headdim", "ngroups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.layer_d_state is not None:
            object.__setattr__(self, "layer_d_state", tuple(int(n) for n in self.layer_d_state))
            if len(self.layer_d_state) != self.n_layer:
                raise ValueError(
                    f"layer_d_state has {len(self.layer_d_state)} entries, expected n_layer={self.n_layer}"
                )
            if min(self.layer_d_state) < 1:
                raise ValueError(f"every layer needs at least one state, got layer_d_state={self.layer_d_state}")
        if self.version == 2 and self.d_inner % self.headdim:
            raise ValueError(f"d_inner={self.d_inner} must be a multiple of headdim={self.headdim}")

    # Derived sizes -------------------------------------------------------------------------------
    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def resolved_dt_rank(self) -> int:
        return self.dt_rank if self.dt_rank is not None else math.ceil(self.d_model / 16)

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return self.vocab_size + (m - self.vocab_size % m) % m

    def layer_state(self, i: int) -> int:
        """d_state of layer i (pruned models may differ per layer)."""
        return self.layer_d_state[i] if self.layer_d_state is not None else self.d_state

    @property
    def d_states(self) -> tuple[int, ...]:
        return tuple(self.layer_state(i) for i in range(self.n_layer))

    @property
    def is_uniform(self) -> bool:
        return len(set(self.d_states)) == 1

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # mamba-ssm interchange ----------------------------------------------------------------------
    def to_mamba_ssm(self) -> dict[str, Any]:
        """mamba-ssm's `MambaConfig` as a dict: exactly its keys, nothing of ours.

        A non-uniform model stores its largest d_state here; the true per-layer values are in the sidecar.
        """
        ssm_cfg: dict[str, Any] = {
            "layer": f"Mamba{self.version}",
            "d_state": max(self.d_states) if self.layer_d_state else self.d_state,
            "d_conv": self.d_conv,
            "expand": self.expand,
        }
        if self.version == 1 and self.dt_rank is not None:
            ssm_cfg["dt_rank"] = self.dt_rank
        if self.version == 2:
            ssm_cfg.update(headdim=self.headdim, ngroups=self.ngroups, chunk_size=self.chunk_size)
        return {
            "d_model": self.d_model,
            "d_intermediate": 0,
            "n_layer": self.n_layer,
            "vocab_size": self.vocab_size,
            "ssm_cfg": ssm_cfg,
            "attn_layer_idx": [],
            "attn_cfg": {},
            "rms_norm": True,
            "residual_in_fp32": self.residual_in_fp32,
            "fused_add_norm": True,
            "pad_vocab_size_multiple": self.pad_vocab_size_multiple,
            "tie_embeddings": True,
        }

    @classmethod
    def from_mamba_ssm(cls, cfg: dict[str, Any], layer_d_state: tuple[int, ...] | None = None) -> ModelConfig:
        ssm = dict(cfg.get("ssm_cfg") or {})
        layer = ssm.pop("layer", "Mamba1")
        if layer not in ("Mamba1", "Mamba2"):
            raise ValueError(f"unsupported ssm_cfg.layer {layer!r}; expected 'Mamba1' or 'Mamba2'")
        if cfg.get("attn_layer_idx"):
            raise ValueError("hybrid models with attention layers (attn_layer_idx) are not supported")
        if cfg.get("d_intermediate", 0):
            raise ValueError("models with an MLP per block (d_intermediate > 0) are not supported")
        # Our LM always ties its head to the embedding and uses RMSNorm: loading an untied or LayerNorm checkpoint
        # would silently overwrite one tied weight with the other, or fail with puzzling tensor names.
        if not cfg.get("tie_embeddings", True):
            raise ValueError("checkpoints with an untied lm_head (tie_embeddings: false) are not supported")
        if not cfg.get("rms_norm", True):
            raise ValueError("checkpoints with LayerNorm blocks (rms_norm: false) are not supported; RMSNorm only")
        version = 1 if layer == "Mamba1" else 2
        defaults = cls(version=version, **_version_defaults(version))
        dt_rank = ssm.get("dt_rank", "auto")
        return cls(
            version=version,
            d_model=cfg["d_model"],
            n_layer=cfg["n_layer"],
            vocab_size=cfg["vocab_size"],
            pad_vocab_size_multiple=cfg.get("pad_vocab_size_multiple", 8),
            d_state=ssm.get("d_state", defaults.d_state),
            d_conv=ssm.get("d_conv", defaults.d_conv),
            expand=ssm.get("expand", defaults.expand),
            dt_rank=None if dt_rank == "auto" else int(dt_rank),
            headdim=ssm.get("headdim", defaults.headdim),
            ngroups=ssm.get("ngroups", defaults.ngroups),
            chunk_size=ssm.get("chunk_size", defaults.chunk_size),
            residual_in_fp32=cfg.get("residual_in_fp32", True),
            layer_d_state=layer_d_state,
        )


def _version_defaults(version: int) -> dict[str, Any]:
    # mamba-ssm's module defaults: Mamba1 d_state 16; Mamba2 d_state 128, headdim 64, chunk 256.
    if version == 1:
        return {"d_state": 16, "pad_vocab_size_multiple": 8}
    return {"d_state": 128, "headdim": 64, "ngroups": 1, "chunk_size": 256, "pad_vocab_size_multiple": 16}


# Published sizes (state-spaces/mamba-* and mamba2-* checkpoints): d_model x n_layer.
_SIZES_1 = {"130m": (768, 24), "370m": (1024, 48), "790m": (1536, 48), "1.4b": (2048, 48), "2.8b": (2560, 64)}
_SIZES_2 = {"130m": (768, 24), "370m": (1024, 48), "780m": (1536, 48), "1.3b": (2048, 48), "2.7b": (2560, 64)}

PRESETS: dict[str, ModelConfig] = {}
for _name, (_d, _n) in _SIZES_1.items():
    PRESETS[f"mamba1-{_name}"] = ModelConfig(version=1, d_model=_d, n_layer=_n, **_version_defaults(1))
for _name, (_d, _n) in _SIZES_2.items():
    PRESETS[f"mamba2-{_name}"] = ModelConfig(version=2, d_model=_d, n_layer=_n, **_version_defaults(2))
# Tiny byte-level models for CPU tests and the default CPU jobs: small enough to train in minutes on two
# cores, large enough to learn Python source well below the byte baseline.
PRESETS["mamba1-tiny"] = ModelConfig(
    version=1, d_model=128, n_layer=4, vocab_size=256, pad_vocab_size_multiple=8, d_state=16
)
PRESETS["mamba2-tiny"] = ModelConfig(
    version=2, d_model=128, n_layer=4, vocab_size=256, pad_vocab_size_multiple=16,
    d_state=32, headdim=32, ngroups=1, chunk_size=64,
)
# A larger byte-level model for the GPU accuracy curves (tens of millions of parameters).
PRESETS["mamba1-small"] = ModelConfig(
    version=1, d_model=512, n_layer=12, vocab_size=256, pad_vocab_size_multiple=8, d_state=16
)
PRESETS["mamba2-small"] = ModelConfig(
    version=2, d_model=512, n_layer=12, vocab_size=256, pad_vocab_size_multiple=16,
    d_state=64, headdim=64, ngroups=1, chunk_size=128,
)


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
