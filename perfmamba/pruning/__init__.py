"""Calibrated, per-layer SSM state pruning that physically shrinks d_state.

One call: `pruned, report = prune_states(model, ratio, calibration, criterion=..., allocation=..., mode=...)`.
The steps, separately: `calibrate` (statistics per layer and state) -> `score` (a criterion) -> `allocate`
(kept indices per layer) -> `apply` (remove or mask). See README.md beside this file for the criteria.
"""

from perfmamba.pruning.allocation import allocate
from perfmamba.pruning.api import CalibrationWarning, calibration_tokens, prune_checkpoint, prune_states, save_pruned
from perfmamba.pruning.calibration import CalibrationStats, NoSSMLayersError, calibrate
from perfmamba.pruning.config import ALLOCATIONS, PRUNE_MODES, PruneConfig
from perfmamba.pruning.criteria import CRITERIA, criteria_for, score
from perfmamba.pruning.record import PruneReport
from perfmamba.pruning.surgery import apply

__all__ = [
    "ALLOCATIONS", "CRITERIA", "PRUNE_MODES", "CalibrationStats", "CalibrationWarning", "NoSSMLayersError",
    "PruneConfig", "PruneReport", "allocate", "apply", "calibrate", "calibration_tokens", "criteria_for",
    "prune_checkpoint", "prune_states", "save_pruned", "score",
]
