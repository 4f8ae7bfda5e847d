"""Shared pieces of the asv classes: the grid, the device, the models, and the case of a parameter tuple.

asv params are a Cartesian product, while a grid is not quite one (a dense case has no criterion); every class
therefore builds its `Case` from the parameters and raises NotImplementedError (asv's "skip") for a product
point that is not a case of the grid.

asv runs every parameter set of every benchmark in a process of its own. Two things keep that affordable on a
GPU: the CUDA kernels are imported here, in the process asv forks the benchmarks from, and the block- and
model-level classes share one `setup_cache` (`prepare_models`) that builds and prunes every model once per run,
so that a benchmark process loads its model rather than calibrating and pruning it again.
"""

from __future__ import annotations

import torch

from perfmamba import load_model, ops, save_model
from perfmamba.bench.cases import NO_CRITERION, Case, get_grid
from perfmamba.bench.timing import configure_process
from perfmamba.bench.workloads import DependencyMissing, ModelCache, Workload, default_device, make_workload

GRID = get_grid()
configure_process(GRID.cpu_threads)
MODELS = ModelCache(size=3)
PARAM_NAMES = ["preset", "seqlen", "batch", "ratio", "criterion"]

if torch.cuda.is_available():  # the NVML check (see __init__): CUDA itself is not initialised here
    # Importing mamba-ssm (Triton, and transformers through mamba_ssm/__init__) took ~10 s of each benchmark
    # process on the H200; imported once here, asv's forked benchmark processes inherit it.
    ops.backend_status()


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


def workload(case: Case, on: torch.device, saved: dict | None = None) -> Workload:
    """The case's workload from the shared model cache, its model loaded from `prepare_models`'s directory
    when `saved` (that function's result) has it; a missing perfmamba dependency is asv's "skip"."""
    if saved is not None and "missing" in saved:
        raise NotImplementedError(saved["missing"])
    name = model_dir(case)
    if saved is not None and name in saved["models"] and not MODELS.has(case, on):
        MODELS.put(case, on, load_model(name, device=on, dtype=case.torch_dtype))
    try:
        return make_workload(case, on, MODELS)
    except DependencyMissing as e:
        raise NotImplementedError(str(e)) from e


def model_dir(case: Case) -> str:
    """The directory, relative to asv's cache directory, that `prepare_models` saves the case's model in."""
    return f"model-{case.preset}-r{case.ratio}-{case.criterion}-{case.dtype}"


def prepare_models() -> dict:
    """setup_cache of the block- and model-level classes: every model their cases time, dense and pruned, built
    and pruned once and saved into the working directory (asv's cache directory, where each benchmark process
    of the run starts). Returns {"models": [directory, ...]}, or {"missing": reason} without perfmamba.pruning."""
    on, cache, names = device(), ModelCache(size=2), []
    cases = {model_dir(c): c for level in ("block", "model") for c in GRID.cases(level)}
    # Dense before pruned, preset by preset: a pruned model is made from the dense one in the cache.
    for name, case in sorted(cases.items(), key=lambda item: (item[1].preset, item[1].ratio)):
        try:
            save_model(cache.get(case, on), name)
        except DependencyMissing as e:
            return {"missing": str(e)}
        names.append(name)
    return {"models": names}


prepare_models.timeout = 1200


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
        self._setup(None, preset, seqlen, batch, ratio, criterion)

    def _setup(self, saved: dict | None, *params) -> None:
        from perfmamba.bench.timing import RoundTimer

        self.case = timing_case(self.level, self.mode, *params)
        self.device = device()
        self.workload = workload(self.case, self.device, saved)
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
        self._setup(None, preset, seqlen, batch, ratio, criterion)

    def _setup(self, saved: dict | None, *params) -> None:
        self.case = timing_case(self.level, self.mode, *params)
        self.device = device()
        self.pruned = workload(self.case, self.device, saved)
        self.dense = workload(self.case.dense(), self.device, saved)

    def track_speedup(self, *params):
        from perfmamba.bench.timing import paired_ratio, time_interleaved

        s = time_interleaved({"dense": self.dense.fn, "pruned": self.pruned.fn}, self.device,
                             rounds=GRID.rounds, warmup=GRID.warmup)
        return paired_ratio(s["dense"], s["pruned"])

    track_speedup.unit = "x"


class SavedModels:
    """Mixin of the block- and model-level classes: `prepare_models` is their setup_cache (one for all of them:
    asv keys a setup_cache by where it is defined), and asv passes its result to `setup` before the params."""

    setup_cache = staticmethod(prepare_models)

    def setup(self, saved, preset, seqlen, batch, ratio, criterion):
        self._setup(saved, preset, seqlen, batch, ratio, criterion)
