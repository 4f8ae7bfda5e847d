"""Shared pieces of the asv classes: the grid, the device, the model cache, and the case of a parameter tuple.

asv params are a Cartesian product, while a grid is not quite one (a dense case has no criterion); every class
therefore builds its `Case` from the parameters and raises NotImplementedError (asv's "skip") for a product
point that is not a case of the grid.
"""

from __future__ import annotations

import torch

from perfmamba.bench.cases import NO_CRITERION, Case, get_grid
from perfmamba.bench.timing import configure_process
from perfmamba.bench.workloads import DependencyMissing, ModelCache, Workload, default_device, make_workload

GRID = get_grid()
configure_process(GRID.cpu_threads)
MODELS = ModelCache(size=3)
PARAM_NAMES = ["preset", "seqlen", "batch", "ratio", "criterion"]


def timing_params(level: str, mode: str, pruned_only: bool = False) -> list[list]:
    ratios = [r for r in GRID.ratios if r > 0] if pruned_only else list(GRID.ratios)
    criterion = NO_CRITERION if level == "op" else GRID.criteria[0]
    return [list(GRID.presets), list(GRID.seqlens(mode)), list(GRID.batches(mode)), ratios, [criterion]]


def timing_case(level: str, mode: str, preset: str, seqlen: int, batch: int, ratio: float, criterion: str) -> Case:
    case = Case(preset, level, mode, seqlen, batch, ratio, criterion, GRID.dtype)
    if case not in GRID.cases(level, mode):
        raise NotImplementedError(f"{case.id} is not a case of grid {GRID.name!r}")
    return case


def device() -> torch.device:
    return default_device()


def workload(case: Case, on: torch.device) -> Workload:
    """The case's workload from the shared model cache; a missing perfmamba dependency is asv's "skip"."""
    try:
        return make_workload(case, on, MODELS)
    except DependencyMissing as e:
        raise NotImplementedError(str(e)) from e


class _TimingBase:
    """time_call: asv's own wall-clock timing of one call (synchronised on a GPU); track_device_time: our median
    of CUDA-event (or perf_counter) samples after an L2 flush, which is the number to trust on a GPU."""

    level = "model"
    mode = "prefill"
    param_names = PARAM_NAMES
    number = 1
    repeat = (3, 15, 20.0)
    warmup_time = 0.2
    timeout = 1200

    def setup(self, preset, seqlen, batch, ratio, criterion):
        from perfmamba.bench.timing import RoundTimer

        self.case = timing_case(self.level, self.mode, preset, seqlen, batch, ratio, criterion)
        self.device = device()
        self.workload = workload(self.case, self.device)
        self.round_timer = RoundTimer(self.workload.fn, self.device)

    def time_call(self, *params):
        self.round_timer()

    def track_device_time(self, *params):
        from perfmamba.bench.timing import time_fn

        return time_fn(self.workload.fn, self.device, rounds=GRID.rounds, warmup=GRID.warmup).median

    track_device_time.unit = "seconds"


class _SpeedupBase:
    """Pruned vs dense, timed interleaved in one process: median over rounds of dense_i / pruned_i."""

    level = "model"
    mode = "prefill"
    param_names = PARAM_NAMES
    number = 1
    timeout = 1200

    def setup(self, preset, seqlen, batch, ratio, criterion):
        self.case = timing_case(self.level, self.mode, preset, seqlen, batch, ratio, criterion)
        self.device = device()
        self.pruned = workload(self.case, self.device)
        self.dense = workload(self.case.dense(), self.device)

    def track_speedup(self, *params):
        from perfmamba.bench.timing import paired_ratio, time_interleaved

        s = time_interleaved({"dense": self.dense.fn, "pruned": self.pruned.fn}, self.device,
                             rounds=GRID.rounds, warmup=GRID.warmup)
        return paired_ratio(s["dense"], s["pruned"])

    track_speedup.unit = "x"
