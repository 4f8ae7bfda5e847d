"""Where the time, memory, FLOPs and bytes of a Mamba model go, per component, across sequence lengths.

By role: `config` (what to sweep), `sweep` (the driver: `profile`, `merge_results`), `measure` (one point),
`analysis` (device time, roofline, scaling fits), `result` (the schema and its JSON/CSV files), `formatting` (the
terminal tables), `plots`, `report` (everything in one directory), `compare` (dense beside pruned), `command`
(`perfmamba profile`). Below them: `costs` (the analytical cost model), `timers` (span timers), `kernels`
(kernel attribution from profiler traces), `memory`, `footprint` (the memory bound checked before a point runs),
`roofline` (the device's measured peaks).
"""

from perfmamba.profiling.analysis import fit_scaling
from perfmamba.profiling.command import ProfileRun, check_memory, run_profile
from perfmamba.profiling.compare import ProfileComparison, compare_profiles, format_comparison
from perfmamba.profiling.config import ProfileConfig
from perfmamba.profiling.costs import Cost, component_costs, layer_costs
from perfmamba.profiling.footprint import Footprint, MemoryPlanError, point_footprint
from perfmamba.profiling.formatting import format_table
from perfmamba.profiling.memory import measure_memory
from perfmamba.profiling.report import write_report
from perfmamba.profiling.result import ComponentStats, PointResult, ProfileResult, read_profile, write_profile_json
from perfmamba.profiling.roofline import DevicePeaks, measure_peaks
from perfmamba.profiling.sweep import merge_results, profile, reanalyse

__all__ = [
    "ComponentStats", "Cost", "DevicePeaks", "Footprint", "MemoryPlanError", "PointResult", "ProfileComparison",
    "ProfileConfig", "ProfileResult", "ProfileRun", "check_memory", "compare_profiles", "component_costs",
    "fit_scaling", "format_comparison", "format_table", "layer_costs", "measure_memory", "measure_peaks",
    "merge_results", "point_footprint", "profile", "read_profile", "reanalyse", "run_profile", "write_profile_json",
    "write_report",
]
