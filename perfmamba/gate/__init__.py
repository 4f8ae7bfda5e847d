"""The regression gate: `perfmamba compare BASE NEW` over result files, `perfmamba gate BASE PR` end to end.

`config` (thresholds, significance), `measurement` (what is compared), `readers` and `asv_results` (formats),
`runs` (several processes a side), `stats` and `processes` (the numbers), `compare` (the rule), `comparison`
(its result), `render` (markdown and text), `run` (benchmark processes of two trees, interleaved on one machine).
"""

from perfmamba.gate.compare import compare, compare_files, judge
from perfmamba.gate.comparison import VERDICTS, Comparison, Row
from perfmamba.gate.config import GateConfig, load_thresholds_file
from perfmamba.gate.measurement import Measurement
from perfmamba.gate.readers import load_results
from perfmamba.gate.runs import load_side

__all__ = [
    "VERDICTS", "Comparison", "GateConfig", "Measurement", "Row", "compare", "compare_files", "judge",
    "load_results", "load_side", "load_thresholds_file",
]
