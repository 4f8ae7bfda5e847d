"""The regression gate: `perfmamba compare BASE NEW` over result files, `perfmamba gate BASE PR` end to end.

`config` (thresholds, significance), `readers` (formats), `runs` (several processes a side), `stats` (the
numbers), `compare` (the rule), `report` (markdown and text), `run` (benchmark processes of two trees,
interleaved on one machine).
"""

from perfmamba.gate.compare import VERDICTS, Comparison, Row, compare, compare_files, judge
from perfmamba.gate.config import GateConfig, load_thresholds_file
from perfmamba.gate.readers import Measurement, load_results
from perfmamba.gate.runs import load_side

__all__ = [
    "VERDICTS", "Comparison", "GateConfig", "Measurement", "Row", "compare", "compare_files", "judge",
    "load_results", "load_side", "load_thresholds_file",
]
