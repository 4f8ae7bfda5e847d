"""The regression gate: `perfmamba compare BASE NEW` over pytest-benchmark JSON, asv results and perfmamba
result files.

Per benchmark it takes the ratio of medians NEW / BASE with a bootstrap interval, tests the change against the
benchmark's threshold with a Mann-Whitney test (Holm-corrected over the family), and calls it regressed,
improved or unchanged; `Comparison.exit_code()` is 1 when anything regressed. `compare` (the rule, and why it
is the rule), `readers` (formats, and the minimal schema perfmamba's producers emit), `stats` (the numbers),
`report` (markdown and text).
"""

from perfmamba.gate.compare import (
    CORRECTIONS,
    DEFAULT_ALPHA,
    DEFAULT_THRESHOLD,
    RESULT_KIND,
    VERDICTS,
    Comparison,
    Finding,
    GateConfig,
    Row,
    compare,
    compare_files,
    judge,
    load_thresholds_file,
)
from perfmamba.gate.readers import Measurement, load_results

__all__ = [
    "CORRECTIONS", "DEFAULT_ALPHA", "DEFAULT_THRESHOLD", "RESULT_KIND", "VERDICTS", "Comparison", "Finding",
    "GateConfig", "Measurement", "Row", "compare", "compare_files", "judge", "load_results", "load_thresholds_file",
]
