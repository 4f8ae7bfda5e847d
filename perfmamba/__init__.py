"""perfmamba: profile, prune and benchmark selective state space models (Mamba-1 / Mamba-2).

The verbs, one call each (see the README for examples):
    build_model / load_model / save_model   models in mamba-ssm's checkpoint layout
    profile                                 where the time, memory, FLOPs and bytes go, per component
    prune_states                            calibrated per-layer SSM state pruning (remove or mask)
    perplexity / evaluate / train           quality on real text, and the small models worth pruning
    compare_files                           the regression gate over benchmark result files

Each is imported on first use (PEP 562), so `import perfmamba.ops` loads the ops and nothing above them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from perfmamba._version import __version__

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    "PRESETS": "perfmamba.models.config",
    "ModelConfig": "perfmamba.models.config",
    "MambaLM": "perfmamba.models.lm",
    "build_model": "perfmamba.models.lm",
    "get_model": "perfmamba.models.checkpoint",
    "load_model": "perfmamba.models.checkpoint",
    "save_model": "perfmamba.models.checkpoint",
    "load_corpus": "perfmamba.data.corpus",
    "PruneConfig": "perfmamba.pruning.config",
    "PruneReport": "perfmamba.pruning.record",
    "prune_states": "perfmamba.pruning.api",
    "save_pruned": "perfmamba.pruning.api",
    "evaluate": "perfmamba.eval.evaluate",
    "perplexity": "perfmamba.eval.perplexity",
    "train": "perfmamba.eval.train",
    "trained_model": "perfmamba.eval.cache",
    "ProfileConfig": "perfmamba.profiling",
    "profile": "perfmamba.profiling",
    "compare_files": "perfmamba.gate.compare",
}
_SUBMODULES = ("ops",)

__all__ = [  # _EXPORTS, _SUBMODULES and __version__, spelled out for linters and readers
    "PRESETS", "MambaLM", "ModelConfig", "ProfileConfig", "PruneConfig", "PruneReport", "__version__",
    "build_model", "compare_files", "evaluate", "get_model", "load_corpus", "load_model", "ops", "perplexity",
    "profile", "prune_states", "save_model", "save_pruned", "train", "trained_model",
]

if TYPE_CHECKING:
    from perfmamba import ops
    from perfmamba.data.corpus import load_corpus
    from perfmamba.eval.cache import trained_model
    from perfmamba.eval.evaluate import evaluate
    from perfmamba.eval.perplexity import perplexity
    from perfmamba.eval.train import train
    from perfmamba.gate.compare import compare_files
    from perfmamba.models.checkpoint import get_model, load_model, save_model
    from perfmamba.models.config import PRESETS, ModelConfig
    from perfmamba.models.lm import MambaLM, build_model
    from perfmamba.profiling import ProfileConfig, profile
    from perfmamba.pruning.api import prune_states, save_pruned
    from perfmamba.pruning.config import PruneConfig
    from perfmamba.pruning.record import PruneReport


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
