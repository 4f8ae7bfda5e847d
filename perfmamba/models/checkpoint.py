"""Checkpoints in mamba-ssm's layout, plus a sidecar for what mamba-ssm's config cannot hold.

A directory holds `config.json` (exactly mamba-ssm's `MambaConfig` keys: its loader builds a strict dataclass and
passes `ssm_cfg` as constructor keywords, so one extra key breaks it), the weights as `pytorch_model.bin` (what
state-spaces checkpoints ship) or `model.safetensors`, and `perfmamba.json` with per-layer d_state and our
metadata. A uniformly pruned model is therefore a plain mamba-ssm checkpoint with a smaller d_state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from perfmamba.models.config import PRESETS, ModelConfig
from perfmamba.models.lm import MambaLM, build_model
from perfmamba.results import SCHEMA_VERSION, atomic_write_text

CONFIG_FILE = "config.json"
SIDECAR_FILE = "perfmamba.json"
TORCH_WEIGHTS = "pytorch_model.bin"
SAFETENSORS_WEIGHTS = "model.safetensors"
TIED_KEY = "lm_head.weight"


class CheckpointError(ValueError):
    """A checkpoint directory is missing files or its tensors do not match its config."""


def save_model(
    model: MambaLM, path: str | os.PathLike, *, safetensors: bool = False, metadata: dict[str, Any] | None = None
) -> Path:
    """Write `model` to directory `path` (created) in mamba-ssm's layout; returns the directory."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = model.config
    atomic_write_text(path / CONFIG_FILE, json.dumps(config.to_mamba_ssm(), indent=2) + "\n")
    sidecar = {
        "schema_version": SCHEMA_VERSION,
        "version": config.version,
        "layer_d_state": list(config.d_states),
        "metadata": metadata or {},
    }
    atomic_write_text(path / SIDECAR_FILE, json.dumps(sidecar, indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path / f".{os.getpid()}.weights.tmp"
    if safetensors:
        from safetensors.torch import save_file

        state.pop(TIED_KEY)  # safetensors refuses shared storage; the head is re-tied on load
        save_file(state, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, path / SAFETENSORS_WEIGHTS)
        (path / TORCH_WEIGHTS).unlink(missing_ok=True)
    else:
        torch.save(state, tmp)
        os.replace(tmp, path / TORCH_WEIGHTS)
        (path / SAFETENSORS_WEIGHTS).unlink(missing_ok=True)
    return path


def read_config(path: str | os.PathLike) -> ModelConfig:
    """The `ModelConfig` of checkpoint directory `path` (config.json + optional sidecar)."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path}: not a checkpoint directory (no {CONFIG_FILE})")
    try:
        cfg = json.loads((path / CONFIG_FILE).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: invalid JSON ({e})") from e
    layer_d_state = None
    if (path / SIDECAR_FILE).is_file():
        try:
            layer_d_state = tuple(json.loads((path / SIDECAR_FILE).read_text())["layer_d_state"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path / SIDECAR_FILE}: corrupt sidecar ({e!r})") from e
    try:
        config = ModelConfig.from_mamba_ssm(cfg, layer_d_state)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: {e}") from e
    return config.replace(layer_d_state=None) if config.is_uniform and layer_d_state else config


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if (path / SAFETENSORS_WEIGHTS).is_file():
        from safetensors.torch import load_file

        return load_file(str(path / SAFETENSORS_WEIGHTS))
    if (path / TORCH_WEIGHTS).is_file():
        return torch.load(path / TORCH_WEIGHTS, map_location="cpu", weights_only=True)
    raise CheckpointError(f"{path}: no weights ({TORCH_WEIGHTS} or {SAFETENSORS_WEIGHTS})")


def check_state_dict(model: MambaLM, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = [f"missing tensor {k} (expected shape {s})" for k, s in expected.items() if k not in state]
    problems += [f"unexpected tensor {k}" for k in state if k not in expected]
    problems += [
        f"tensor {k}: expected shape {expected[k]} from the config, found {tuple(v.shape)}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    if problems:
        raise CheckpointError(f"{source} does not match its config:\n  " + "\n  ".join(problems))


def load_model(
    path: str | os.PathLike, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> MambaLM:
    """Load a checkpoint directory written by `save_model` or by mamba-ssm (`save_pretrained`)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    config = read_config(path)
    state = _read_state_dict(path)
    state.setdefault(TIED_KEY, state.get("backbone.embedding.weight"))
    model = MambaLM(config, device="meta")
    check_state_dict(model, state, source=str(path))
    model = MambaLM(config, device=device, dtype=dtype)
    model.load_state_dict(state, strict=True)
    return model


def get_model(
    spec: str | os.PathLike, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> MambaLM:
    """A model from a checkpoint directory or, if `spec` is not a path, a preset name (random weights)."""
    if Path(spec).exists():
        return load_model(spec, device, dtype)
    if str(spec) in PRESETS:
        return build_model(str(spec), device=device, dtype=dtype)
    raise ValueError(f"{spec!r} is neither a checkpoint directory nor a preset; presets: {', '.join(PRESETS)}")
