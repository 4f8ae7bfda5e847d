"""Mamba-1 / Mamba-2 language models, state-dict compatible with mamba-ssm's MambaLMHeadModel."""

from perfmamba.models.checkpoint import CheckpointError, get_model, load_model, read_config, save_model
from perfmamba.models.common import LayerCache, MixerBase
from perfmamba.models.components import COMPONENTS, span, tracing
from perfmamba.models.config import PRESETS, ModelConfig, get_preset
from perfmamba.models.lm import MambaLM, build_model
from perfmamba.models.mamba1 import Mamba1Mixer
from perfmamba.models.mamba2 import Mamba2Mixer

__all__ = [
    "COMPONENTS", "PRESETS", "CheckpointError", "LayerCache", "Mamba1Mixer", "Mamba2Mixer", "MambaLM",
    "MixerBase", "ModelConfig", "build_model", "get_model", "get_preset", "load_model", "read_config",
    "save_model", "span", "tracing",
]
