"""Where the time, memory, FLOPs and bytes of a Mamba model go, per component, across sequence lengths.

`profile(model, ProfileConfig(...))` sweeps sequence lengths, batch sizes, prefill / decode and the unfused /
fused paths and returns a `ProfileResult` (`sweep`); `report` turns it into a terminal table, JSON and CSV,
`plots` draws it, `compare` sets a dense model beside a pruned one; `run_profile` is `perfmamba profile` as a
function (`command`). `costs` is the analytical cost model, `timers` the span timers and kernel attribution,
`memory` the memory tracking, `footprint` the memory bound checked before a point runs, `roofline` the device's
measured peaks.
"""

from perfmamba.profiling.command import ProfileRun, check_memory, run_profile
from perfmamba.profiling.compare import ProfileComparison, compare_profiles, format_comparison
from perfmamba.profiling.costs import (
    Cost,
    cache_bytes_per_sequence,
    component_costs,
    components_of,
    flop_counter_by_component,
    layer_costs,
)
from perfmamba.profiling.footprint import Footprint, MemoryPlanError, available_memory, point_footprint
from perfmamba.profiling.memory import LiveTensorTracker, MemoryProfile, measure_memory
from perfmamba.profiling.report import format_table, read_profile, write_profile_json, write_report
from perfmamba.profiling.roofline import DevicePeaks, measure_peaks, roofline_point
from perfmamba.profiling.sweep import (
    ComponentStats,
    PointResult,
    ProfileConfig,
    ProfileResult,
    ScalingFit,
    fit_scaling,
    merge_results,
    profile,
    reanalyse,
)
from perfmamba.profiling.timers import SpanTimer, kernel_attribution

__all__ = [
    "ComponentStats", "Cost", "DevicePeaks", "Footprint", "LiveTensorTracker", "MemoryPlanError", "MemoryProfile",
    "PointResult", "ProfileComparison", "ProfileConfig", "ProfileResult", "ProfileRun", "ScalingFit", "SpanTimer",
    "available_memory", "cache_bytes_per_sequence", "check_memory", "compare_profiles", "component_costs",
    "components_of", "fit_scaling", "flop_counter_by_component", "format_comparison", "format_table",
    "kernel_attribution", "layer_costs", "measure_memory", "measure_peaks", "merge_results", "point_footprint",
    "profile", "read_profile", "reanalyse", "roofline_point", "run_profile", "write_profile_json", "write_report",
]
