"""Calibrated, per-layer SSM state pruning that physically shrinks d_state.

One call: `pruned, report = prune_states(model, ratio, calibration, criterion=..., allocation=..., mode=...)`.
The steps, separately: `calibrate` (statistics per layer and state) -> `score` (a criterion) -> `allocate`
(kept indices per layer) -> `apply` (remove or mask). See README.md beside this file for the criteria.
"""

from perfmamba.pruning.allocation import allocate, global_counts, top_states
from perfmamba.pruning.api import CalibrationWarning, calibration_tokens, prune_checkpoint, prune_states, save_pruned
from perfmamba.pruning.calibration import CalibrationStats, LayerStats, NoSSMLayersError, calibrate
from perfmamba.pruning.config import (
    ALLOCATIONS,
    PRUNE_MODES,
    PruneConfig,
    kept_count,
    legal_multiple,
    parse_multiple,
    resolve_multiple,
)
from perfmamba.pruning.criteria import CRITERIA, criteria_for, score
from perfmamba.pruning.record import LayerReport, PruneReport
from perfmamba.pruning.surgery import apply

__all__ = [
    "ALLOCATIONS", "CRITERIA", "PRUNE_MODES", "CalibrationStats", "CalibrationWarning", "LayerReport", "LayerStats",
    "NoSSMLayersError",
    "PruneConfig", "PruneReport", "allocate", "apply", "calibrate", "calibration_tokens", "criteria_for",
    "global_counts", "kept_count", "legal_multiple", "parse_multiple", "prune_checkpoint", "prune_states",
    "resolve_multiple", "save_pruned", "score", "top_states",
]
