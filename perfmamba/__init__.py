"""perfmamba: profile, prune and benchmark selective state space models (Mamba-1 / Mamba-2)."""

__version__ = "0.1.0"

from perfmamba import ops
from perfmamba.models import (
    PRESETS,
    MambaLM,
    ModelConfig,
    build_model,
    get_model,
    load_model,
    save_model,
)

__all__ = [
    "PRESETS",
    "MambaLM",
    "ModelConfig",
    "__version__",
    "build_model",
    "get_model",
    "load_model",
    "ops",
    "save_model",
]
