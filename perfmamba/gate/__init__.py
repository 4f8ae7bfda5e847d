"""The regression gate: `perfmamba compare BASE NEW` over result files, `perfmamba gate BASE PR` end to end.

`config` (thresholds, significance), `measurement` (what is compared), `readers` and `asv_results` (formats),
`runs` (several processes a side), `stats` and `processes` (the numbers), `compare` (the rule), `comparison`
(its result), `render` (markdown and text), `run` (benchmark processes of two trees, interleaved on one machine).
"""

from perfmamba.gate.compare import compare, compare_files
from perfmamba.gate.comparison import Comparison
from perfmamba.gate.config import GateConfig
from perfmamba.gate.readers import load_results

__all__ = ["Comparison", "GateConfig", "compare", "compare_files", "load_results"]
