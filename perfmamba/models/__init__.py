"""Mamba-1 / Mamba-2 language models, state-dict compatible with mamba-ssm's MambaLMHeadModel."""

from perfmamba.models.checkpoint import CheckpointError, get_model, load_model, read_config, save_model
from perfmamba.models.config import PRESETS, ModelConfig, get_preset
from perfmamba.models.lm import MambaLM, build_model

__all__ = [
    "PRESETS", "CheckpointError", "MambaLM", "ModelConfig", "build_model", "get_model", "get_preset", "load_model",
    "read_config", "save_model",
]
