"""perfmamba: profile, prune and benchmark selective state space models (Mamba-1 / Mamba-2).

The verbs, one call each (see the README for examples):
    build_model / load_model / save_model   models in mamba-ssm's checkpoint layout
    profile                                 where the time, memory, FLOPs and bytes go, per component
    prune_states                            calibrated per-layer SSM state pruning (remove or mask)
    perplexity / evaluate / train           quality on real text, and the small models worth pruning
    compare_files                           the regression gate over benchmark result files
"""

__version__ = "0.1.0"

from perfmamba import ops
from perfmamba.eval import evaluate, load_corpus, perplexity, train, trained_model
from perfmamba.gate import compare_files
from perfmamba.models import (
    PRESETS,
    MambaLM,
    ModelConfig,
    build_model,
    get_model,
    load_model,
    save_model,
)
from perfmamba.profiling import ProfileConfig, profile
from perfmamba.pruning import PruneConfig, PruneReport, prune_states, save_pruned

__all__ = [
    "PRESETS", "MambaLM", "ModelConfig", "ProfileConfig", "PruneConfig", "PruneReport", "__version__",
    "build_model", "compare_files", "evaluate", "get_model", "load_corpus", "load_model", "ops", "perplexity",
    "profile", "prune_states", "save_model", "save_pruned", "train", "trained_model",
]
