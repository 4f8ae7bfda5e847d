"""Benchmark cases, thresholds and timing shared by the pytest-benchmark suite, the asv suite and the scripts.

`cases` defines the grid (version x preset x sequence length x batch x prune ratio x criterion, per level and
mode), `thresholds` the reviewed limits per device class (`thresholds.toml`), `timing` correct CPU/GPU timing,
`workloads` what each case runs, `harness` the bridge to pytest-benchmark and result files, `plugins` bad
kernels that the thresholds and the gate must catch.
"""

from perfmamba.bench.cases import GRIDS, Case, Grid, get_grid, kept_states
from perfmamba.bench.thresholds import (
    ThresholdError,
    Thresholds,
    ThresholdsError,
    device_class,
    load_thresholds,
)
from perfmamba.bench.timing import Samples, time_fn, time_interleaved

__all__ = [
    "GRIDS", "Case", "Grid", "Samples", "ThresholdError", "Thresholds", "ThresholdsError", "device_class",
    "get_grid", "kept_states", "load_thresholds", "time_fn", "time_interleaved",
]
