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
from perfmamba.outputs import replacing_directory
from perfmamba.results import SCHEMA_VERSION

CONFIG_FILE = "config.json"
SIDECAR_FILE = "perfmamba.json"
TORCH_WEIGHTS = "pytorch_model.bin"
SAFETENSORS_WEIGHTS = "model.safetensors"
TIED_KEY = "lm_head.weight"


class CheckpointError(ValueError):
    """A checkpoint directory is missing files or its tensors do not match its config."""


def save_model(
    model: MambaLM, path: str | os.PathLike, *, safetensors: bool = False, metadata: dict[str, Any] | None = None,
    force: bool = True,
) -> Path:
    """Write `model` to directory `path` in mamba-ssm's layout, whole or not at all: filled beside it, then swapped
    in (nothing of what `path` held before survives). `force=False` refuses a `path` that holds anything."""
    with replacing_directory(path, force=force) as staging:
        write_model_files(model, staging, safetensors=safetensors, metadata=metadata)
    return Path(path)


def write_model_files(
    model: MambaLM, folder: Path, *, safetensors: bool = False, metadata: dict[str, Any] | None = None
) -> None:
    """The checkpoint's files, written into an existing staging folder: config, sidecar, weights. Plain writes:
    `replacing_directory` syncs the folder and swaps it in whole, so a file-by-file atomic write would sync twice."""
    config = model.config
    (folder / CONFIG_FILE).write_text(json.dumps(config.to_mamba_ssm(), indent=2) + "\n")
    sidecar = {
        "schema_version": SCHEMA_VERSION,
        "version": config.version,
        "layer_d_state": list(config.d_states),
        "metadata": metadata or {},
    }
    (folder / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if safetensors:
        from safetensors.torch import save_file

        state.pop(TIED_KEY)  # safetensors refuses shared storage; the head is re-tied on load
        save_file(state, str(folder / SAFETENSORS_WEIGHTS), metadata={"format": "pt"})
    else:
        torch.save(state, folder / TORCH_WEIGHTS)


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: invalid JSON ({e})") from None


def _sidecar_states(file: Path, n_layer: int) -> tuple[int, ...]:
    doc = _read_json(file)
    states = doc.get("layer_d_state") if isinstance(doc, dict) else None
    if not isinstance(states, list) or any(isinstance(n, bool) or not isinstance(n, int) for n in states):
        raise CheckpointError(f"{file}: layer_d_state must be a list of integers, got {states!r}")
    if len(states) != n_layer:
        raise CheckpointError(f"{file}: layer_d_state has {len(states)} entries; config.json has n_layer {n_layer}")
    if min(states, default=1) < 1:
        raise CheckpointError(f"{file}: every layer needs at least one state, got layer_d_state {states}")
    return tuple(states)


def read_config(path: str | os.PathLike) -> ModelConfig:
    """The `ModelConfig` of checkpoint directory `path` (config.json + optional sidecar). Errors name the file
    and the field at fault."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path}: not a checkpoint directory (no {CONFIG_FILE})")
    cfg = _read_json(path / CONFIG_FILE)
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path / CONFIG_FILE}: expected an object, found {type(cfg).__name__}")
    try:
        config = ModelConfig.from_mamba_ssm(cfg)
    except KeyError as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: missing key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: {e}") from None
    if not (path / SIDECAR_FILE).is_file():
        return config
    states = _sidecar_states(path / SIDECAR_FILE, config.n_layer)
    if len(set(states)) > 1:
        return config.replace(layer_d_state=states)
    if states[0] != config.d_state:  # a uniform sidecar says what config.json must: two answers is a broken save
        raise CheckpointError(f"{path / SIDECAR_FILE}: layer_d_state is {states[0]} in every layer, but "
                              f"{CONFIG_FILE} has d_state {config.d_state}")
    return config


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if (path / SAFETENSORS_WEIGHTS).is_file():
            from safetensors.torch import load_file

            return load_file(str(path / SAFETENSORS_WEIGHTS))
        if (path / TORCH_WEIGHTS).is_file():
            return torch.load(path / TORCH_WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch and safetensors raise many kinds for a damaged file
        file = path / (SAFETENSORS_WEIGHTS if (path / SAFETENSORS_WEIGHTS).is_file() else TORCH_WEIGHTS)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{file}: cannot read the weights, truncated or corrupt? ({reason})") from None
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
