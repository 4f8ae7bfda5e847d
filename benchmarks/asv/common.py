"""Shared pieces of the asv classes: the grid, the device, the models, and the case of a parameter tuple.

asv params are a Cartesian product, while a grid is not quite one (a dense case has no criterion); every class
therefore builds its `Case` from the parameters and raises NotImplementedError (asv's "skip") for a product
point that is not a case of the grid.

asv runs every parameter set of every benchmark in a process of its own. Two things keep that affordable on a
GPU (measured on the H200: docs/results/h100.md):
- the CUDA kernels are imported here, in the server asv forks the benchmark processes from (asv.conf.json sets
  "launch_method": "forkserver"; asv's own default starts a fresh interpreter for each);
- the timing classes share one `setup_cache` (`model_store`): a directory where the first process that needs a
  dense or pruned model builds or prunes it and saves it, and every later process of the run loads it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from perfmamba import load_model, ops, save_model
from perfmamba.bench.cases import NO_CRITERION, REFERENCE_LEVEL, Case, get_grid
from perfmamba.bench.workloads import ModelCache, Workload, default_device, make_workload
from perfmamba.models import MambaLM
from perfmamba.timing import configure_process

GRID = get_grid()
MODELS = ModelCache(size=3)
PARAM_NAMES = ["preset", "seqlen", "batch", "ratio", "criterion"]

if torch.cuda.is_available():  # the NVML check (see __init__): CUDA itself is not initialised here
    # Importing mamba-ssm (Triton, and transformers through mamba_ssm/__init__) took ~9.5 s of each benchmark
    # process on the H200; imported once here, the forked benchmark processes inherit it.
    ops.backend_status()


def configure() -> None:
    """The process settings of every benchmark (threads, subnormals): called by each setup and setup_cache, since
    importing the suite must not change the importing process."""
    configure_process(GRID.cpu_threads)


def timing_params(level: str, mode: str, pruned_only: bool = False) -> list[list]:
    ratios = [r for r in GRID.ratios if r > 0] if pruned_only else list(GRID.ratios)
    criterion = NO_CRITERION if level == "op" else GRID.criteria[0]
    if level == REFERENCE_LEVEL:  # dense models only
        ratios, criterion = [0.0], NO_CRITERION
    return [list(GRID.presets), list(GRID.seqlens(mode, level)), list(GRID.batches(mode, level)), ratios,
            [criterion]]


def timing_case(level: str, mode: str, preset: str, seqlen: int, batch: int, ratio: float, criterion: str) -> Case:
    case = Case(preset, level, mode, seqlen, batch, ratio, criterion, GRID.dtype)
    if case not in GRID.cases(level, mode):
        raise NotImplementedError(f"{case.id} is not a case of grid {GRID.name!r}")
    return case


def device() -> torch.device:
    return default_device()


def workload(case: Case, on: torch.device, store: str | None = None) -> Workload:
    """The case's workload, its model from the shared model cache and, with `store` (`model_store`'s result),
    from that directory."""
    if store is not None and case.level != "op" and not MODELS.has(case, on):
        MODELS.put(case, on, stored_model(case, on, Path(store)))
    return make_workload(case, on, MODELS)


def model_dir(case: Case) -> str:
    """The directory, inside the model store, of the case's model."""
    return f"model-{case.preset}-r{case.ratio}-{case.criterion}-{case.dtype}"


def stored_model(case: Case, on: torch.device, store: Path) -> MambaLM:
    """The case's model, loaded from `store`; the first process to ask makes it (a pruned model from the stored
    dense one) and saves it there. asv runs one benchmark process at a time, and a directory appears only once
    complete (renamed into place), so a process never loads a half-written model."""
    path = store / model_dir(case)
    if path.is_dir():
        return load_model(path, device=on, dtype=case.torch_dtype)
    if case.pruned and not MODELS.has(case.dense(), on):
        MODELS.put(case.dense(), on, stored_model(case.dense(), on, store))
    model = MODELS.get(case, on)
    tmp = store / f".{path.name}.{os.getpid()}.tmp"
    save_model(model, tmp)
    os.replace(tmp, path)
    return model


def model_store() -> str:
    """setup_cache of the timing classes: the model store is asv's cache directory, the working directory of this
    function and of every benchmark process of the run (asv deletes it after the run). Models are made there on
    demand, so a run makes only the models of the benchmarks it selects, each once.

    asv keys a setup_cache by where it is defined, so all the classes share this one, and it is part of each
    benchmark's version hash: editing it starts a new history for all of them."""
    return os.getcwd()


class _CaseBase:
    """One grid case per parameter set: the case and the device, on the shared model store."""

    level = "model"
    mode = "prefill"
    param_names = PARAM_NAMES
    number = 1
    timeout = 1200

    setup_cache = staticmethod(model_store)

    def setup(self, store, preset, seqlen, batch, ratio, criterion):
        configure()
        self.case = timing_case(self.level, self.mode, preset, seqlen, batch, ratio, criterion)
        self.device = device()


class _TimingBase(_CaseBase):
    """time_call: asv's own wall-clock timing of one call (synchronised on a GPU); track_device_time: our median
    of CUDA-event (or perf_counter) samples after an L2 flush, which is the number to trust on a GPU."""

    repeat = (3, 15, 20.0)
    warmup_time = 0.2

    def setup(self, store, preset, seqlen, batch, ratio, criterion):
        from perfmamba.timing import RoundTimer

        super().setup(store, preset, seqlen, batch, ratio, criterion)
        self.workload = workload(self.case, self.device, store)
        self.round_timer = RoundTimer(self.workload.fn, self.device)

    def time_call(self, *params):
        self.round_timer()

    def track_device_time(self, *params):
        from perfmamba.timing import time_fn

        return time_fn(self.workload.fn, self.device, rounds=GRID.rounds, warmup=GRID.warmup).median

    track_device_time.unit = "seconds"


class _SpeedupBase(_CaseBase):
    """Pruned vs dense, timed interleaved in one process: median over rounds of dense_i / pruned_i."""

    def setup(self, store, preset, seqlen, batch, ratio, criterion):
        super().setup(store, preset, seqlen, batch, ratio, criterion)
        self.pruned = workload(self.case, self.device, store)
        self.dense = workload(self.case.dense(), self.device, store)

    def track_speedup(self, *params):
        from perfmamba.timing import paired_ratio, time_interleaved

        s = time_interleaved({"dense": self.dense.fn, "pruned": self.pruned.fn}, self.device,
                             rounds=GRID.rounds, warmup=GRID.warmup)
        return paired_ratio(s["dense"], s["pruned"])

    track_speedup.unit = "x"
