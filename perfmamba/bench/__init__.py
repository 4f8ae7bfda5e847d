"""Benchmark cases and thresholds shared by the pytest-benchmark suite, the asv suite and the scripts.

`cases` defines the grid (version x preset x sequence length x batch x prune ratio x criterion, per level and
mode), `thresholds` the reviewed limits per device class (`thresholds.toml`), `workloads` what each case runs,
`harness` the bridge to pytest-benchmark and result files, `plugins` bad kernels that the thresholds and the gate
must catch. Timing itself is `perfmamba.timing`'s.
"""

from perfmamba.bench.cases import GRIDS, Case, Grid, get_grid
from perfmamba.bench.thresholds import ThresholdError, Thresholds, device_class, load_thresholds

__all__ = ["GRIDS", "Case", "Grid", "ThresholdError", "Thresholds", "device_class", "get_grid", "load_thresholds"]
