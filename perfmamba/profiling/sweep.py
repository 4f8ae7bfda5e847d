"""`profile(model, config)`: where the time, memory, FLOPs and bytes of a Mamba model go, per component, across
sequence lengths and batch sizes, for prefill and decode.

Per point of the sweep (path x mode x batch x sequence length):
1. Time: the plain end-to-end call and the same call with a `SpanTimer` installed run interleaved, round by
   round (`perfmamba.timing`: warm-up, L2 flush and synchronisation on a GPU, CUDA events); the
   end-to-end time is the untraced median, each component's the median of its per-run self time, and "other"
   is what the traced run spent outside every span (residual adds, casts, layout copies, Python).
   Prefill is one forward over (batch, L) tokens; decode is TTFT (a prefill that fills the cache) and TPOT (one
   `model.step`, split by component).
2. On a GPU, a `torch.profiler` pass attributes every kernel's device time to its component (the fused path's
   single span is split by kernel names): the busy time. Busy time well below the wall time means the run is
   launch-bound: the GPU waits for the CPU, and the per-span times are launch times (`launch_bound`); a
   component's device time (`device_time`) is then its kernels' time, else its span time.
   `cuda_graphs=True` also times the call replayed from a CUDA graph, without launch overhead.
3. Memory: one run with every span instrumented (`memory.measure_memory`), plus the decode cache's bytes per
   sequence, measured and from the cost model.
4. Costs: the analytical FLOPs and minimum bytes of each component (`costs`), checked against
   `torch.utils.flop_counter` once per series, and each component's place under the measured roofline.
5. Scaling: device time ~ L^k per component, fitted over the finished points of each series.

A point whose memory bound (`footprint`) is above what the device has free is skipped, unstarted, and ends its
series, as does a point that ran out of memory (recorded as such: longer sequences would not fit either); the
points measured before it are kept. `budget_s` ends the sweep cleanly when the next point would not fit in the
time left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perfmamba import ops
from perfmamba.models import MambaLM, ModelConfig, build_model, get_model
from perfmamba.profiling.costs import (
    MODES,
    Cost,
    cache_bytes_per_sequence,
    component_costs,
    components_of,
    flop_counter_by_component,
    total_cost,
)
from perfmamba.profiling.footprint import available_memory, gib, point_footprint
from perfmamba.profiling.memory import measure_memory, tensor_bytes
from perfmamba.profiling.roofline import DevicePeaks, measure_peaks, roofline_point
from perfmamba.profiling.timers import COPIES, OTHER, SpanTimer, profile_runs, split_fused
from perfmamba.timing import Samples, flushing_subnormals, paired_ratio, time_fn, time_interleaved

PROFILE_VERSION = 1  # layout of the profile payload (the file's schema_version is perfmamba.results')
STATUSES = ("ok", "oom", "skipped", "error", "pending")  # pending: planned, not measured yet
CPU_SEQLENS = (64, 128, 256, 512, 1024)
GPU_SEQLENS = tuple(2**i for i in range(6, 15))  # 64 .. 16384, the paper's range
_OPS_USED = {
    1: ("rms_norm", "causal_conv1d", "selective_scan", "causal_conv1d_update", "selective_state_update"),
    2: ("rms_norm", "causal_conv1d", "ssd_scan", "rms_norm_gated", "causal_conv1d_update", "selective_state_update"),
}
_FUSED_OP = {1: "mamba_inner", 2: "mamba_split_conv1d_scan"}


# Configuration -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProfileConfig:
    """What to sweep and how to measure. `None` fields are resolved per device by `resolved()`: seqlens 64..16384
    on CUDA, 64..1024 on a CPU; dtype bfloat16 on CUDA, float32 on a CPU; rounds 20 / 5 and warm-up 5 / 1;
    kernel attribution on CUDA only."""

    seqlens: tuple[int, ...] | None = None
    batch_sizes: tuple[int, ...] = (1,)
    modes: tuple[str, ...] = ("prefill", "decode")
    paths: tuple[str, ...] = ("unfused",)  # "unfused" (one span per component) and/or "fused" (CUDA)
    device: str | None = None  # None: "cuda" when available, else "cpu"
    dtype: str | None = None
    backend: str = "auto"  # ops backend for every layer (see perfmamba.ops)
    rounds: int | None = None  # at least this many timed rounds per call...
    warmup: int | None = None
    min_time_s: float = 0.25  # ...and more for fast calls, until the timed rounds take this long (<= 10x rounds)
    kernel_attribution: bool | None = None  # torch.profiler pass per point
    profiler_runs: int = 3
    cuda_graphs: bool = False  # also time the call replayed from a CUDA graph
    memory: bool = True
    count_flops: bool = True  # flop_counter check at the first point of each series
    roofline: bool = True  # measure the device's peaks (once per process)
    launch_bound_threshold: float = 0.7  # busy / wall below this: launch-bound
    budget_s: float | None = None  # stop starting points after this many seconds
    # torch intra-op threads on a CPU (None: leave torch's setting). One by default, as the benchmark suite: a
    # profile comparable across machines, and immune to oversubscription (two threads on a loaded 2-core VM took
    # 95 s for the default tiny profile, one thread 13 s).
    cpu_threads: int | None = 1
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("seqlens", "batch_sizes", "modes", "paths"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.seqlens is not None and (not self.seqlens or min(self.seqlens) < 1):
            raise ValueError(f"seqlens must be a non-empty list of lengths >= 1, got {self.seqlens}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch_sizes must be a non-empty list of sizes >= 1, got {self.batch_sizes}")
        for mode in self.modes:
            if mode not in MODES:
                raise ValueError(f"modes must be among {MODES}, got {mode!r}")
        if not self.modes:
            raise ValueError(f"modes must name at least one of {MODES}")
        for path in self.paths:
            if path not in ("unfused", "fused"):
                raise ValueError(f"paths must be among ('unfused', 'fused'), got {path!r}")
        if not self.paths:
            raise ValueError("paths must name at least one of ('unfused', 'fused')")
        if self.device is not None and torch.device(self.device).type not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {self.device!r}")
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {self.dtype!r}")
        if self.rounds is not None and self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.min_time_s < 0:
            raise ValueError(f"min_time_s must be >= 0, got {self.min_time_s}")
        if self.warmup is not None and self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.profiler_runs < 1:
            raise ValueError(f"profiler_runs must be >= 1, got {self.profiler_runs}")
        if not 0 < self.launch_bound_threshold <= 1:
            raise ValueError(f"launch_bound_threshold must be in (0, 1], got {self.launch_bound_threshold}")
        if self.budget_s is not None and self.budget_s <= 0:
            raise ValueError(f"budget_s must be > 0, got {self.budget_s}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be >= 1, got {self.cpu_threads}")

    def resolved(self) -> ProfileConfig:
        """A copy with every `None` filled in for the device it will run on."""
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but torch sees no CUDA device")
        cuda = torch.device(device).type == "cuda"
        return dataclasses.replace(
            self,
            device=device,
            seqlens=tuple(sorted(set(self.seqlens or (GPU_SEQLENS if cuda else CPU_SEQLENS)))),
            batch_sizes=tuple(sorted(set(self.batch_sizes))),
            dtype=self.dtype or ("bfloat16" if cuda else "float32"),
            rounds=self.rounds or (20 if cuda else 5),
            warmup=self.warmup if self.warmup is not None else (5 if cuda else 1),
            kernel_attribution=cuda if self.kernel_attribution is None else self.kernel_attribution,
        )


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# Results -------------------------------------------------------------------------------------------------------
@dataclass
class ComponentStats:
    """One component at one point. Times are per call (one forward, or one decode step), in seconds."""

    name: str
    time_s: float | None  # median self time (events / perf_counter); the fused path's split is from kernels
    samples_s: list[float] = field(default_factory=list)
    share: float | None = None  # of the sum over components (other included)
    busy_s: float | None = None  # device time of its kernels (profiler), or CPU op time
    flops: float = 0.0  # cost model
    bytes: float = 0.0
    matmul_flops: float = 0.0
    counted_flops: float | None = None  # torch.utils.flop_counter (matrix products and convolutions)
    intensity: float | None = None
    achieved_flops_per_s: float | None = None
    achieved_bytes_per_s: float | None = None
    roofline_fraction: float | None = None
    bound: str | None = None
    peak_bytes: int | None = None
    allocated_bytes: int | None = None
    retained_bytes: int | None = None


@dataclass
class PointResult:
    path: str
    mode: str
    batch: int
    seqlen: int
    status: str = "pending"
    message: str | None = None
    clock: str | None = None  # "cuda_event" or "perf_counter"
    time_s: float | None = None  # median end-to-end time of one call: a prefill forward, or a decode step (TPOT)
    samples_s: list[float] = field(default_factory=list)
    traced_time_s: float | None = None  # the same call with span timers in
    coverage: float | None = None  # sum of the named components / end-to-end time (median of paired rounds)
    ttft_s: float | None = None  # decode: prefill of the prompt into the cache
    ttft_samples_s: list[float] = field(default_factory=list)
    tokens_per_s: float | None = None
    graph_time_s: float | None = None
    graph_samples_s: list[float] = field(default_factory=list)
    busy_s: float | None = None  # device busy time per call (profiler)
    busy_fraction: float | None = None  # busy_s / time_s
    launch_bound: bool | None = None
    flops: float | None = None
    bytes: float | None = None
    peak_bytes: int | None = None
    peak_activation_bytes: int | None = None
    allocated_bytes: int | None = None
    memory_method: str | None = None
    cache_bytes_per_sequence: int | None = None  # decode: measured (LayerCache.nbytes / batch)
    cache_bytes_per_sequence_model: int | None = None  # decode: cost model
    wall_s: float | None = None  # seconds spent measuring this point
    components: list[ComponentStats] = field(default_factory=list)
    # fused path: the kernels inside the fused mixer that no class claimed ("op: kernel" -> seconds per call)
    unclassified_kernels: dict[str, float] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.path, self.mode, self.batch, self.seqlen)

    def component(self, name: str) -> ComponentStats | None:
        return next((c for c in self.components if c.name == name), None)


@dataclass
class ScalingFit:
    """time ~ L^k over one series' finished points: `k` over all of them, `k_tail` over the longer half."""

    path: str
    mode: str
    batch: int
    component: str  # a component, "other" or "total"
    k: float
    r2: float
    k_tail: float | None
    seqlens: list[int]


@dataclass
class ModelInfo:
    name: str
    version: int
    config: dict[str, Any]
    params: int
    weights_bytes: int
    device: str
    dtype: str
    backends: dict[str, str]  # op -> the backend that runs it here ("reference", "cuda", a plug-in)


@dataclass
class ProfileResult:
    model: ModelInfo
    config: ProfileConfig
    points: list[PointResult]
    fits: list[ScalingFit] = field(default_factory=list)
    peaks: DevicePeaks | None = None
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def point(self, *, mode: str, seqlen: int, batch: int = 1, path: str = "unfused") -> PointResult:
        for p in self.points:
            if p.key == (path, mode, batch, seqlen):
                return p
        raise KeyError(f"no point path={path} mode={mode} batch={batch} seqlen={seqlen}")

    def ok_points(self) -> list[PointResult]:
        return [p for p in self.points if p.status == "ok"]

    def to_dict(self) -> dict[str, Any]:
        return {"profile_version": PROFILE_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ProfileResult:
        """The inverse of `to_dict` (also accepts a whole result file's dict); raises ValueError naming what is
        missing or malformed."""
        version = doc.get("profile_version")
        if version != PROFILE_VERSION:
            raise ValueError(f"unsupported profile_version {version!r}; this perfmamba reads {PROFILE_VERSION}")
        try:
            config = ProfileConfig(**doc["config"])
            points = []
            for p in doc["points"]:
                p = dict(p)
                p["components"] = [ComponentStats(**c) for c in p.get("components", [])]
                points.append(PointResult(**p))
            return cls(
                model=ModelInfo(**doc["model"]), config=config, points=points,
                fits=[ScalingFit(**f) for f in doc.get("fits", [])],
                peaks=DevicePeaks(**doc["peaks"]) if doc.get("peaks") else None,
                notes=list(doc.get("notes", [])), wall_s=float(doc.get("wall_s", 0.0)),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed profile: {type(e).__name__}: {e}") from e


# Measurement helpers ------------------------------------------------------------------------------------------
def is_out_of_memory(error: BaseException) -> bool:
    """An allocation failure (CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(error, MemoryError)
    )


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _split_samples(runs: list[dict[str, float]], traced: Samples, names: Sequence[str]) -> dict[str, list[float]]:
    """Per component, its self time in each traced run; "other" is the run's time outside every span."""
    out = {name: [run.get(name, 0.0) for run in runs] for name in names}
    out[OTHER] = [max(0.0, total - sum(run.values())) for run, total in zip(runs, traced.seconds, strict=True)]
    return out


def _gemm_shares(config: ModelConfig, costs: dict[str, Cost]) -> dict[str, float]:
    names = ("in_proj", "x_proj", "out_proj") if config.version == 1 else ("in_proj", "out_proj")
    return {name: costs[name].matmul_flops for name in names}


def _resolved_backends(model: MambaLM, backend: str, device: torch.device) -> dict[str, str]:
    probe = torch.empty(0, device=device)
    out = {}
    for op in _OPS_USED[model.config.version]:
        try:
            out[op] = ops.resolve(op, backend, probe)[0]
        except (ValueError, ops.BackendUnavailableError) as e:
            out[op] = f"unavailable: {e}"
    return out


class _Point:
    """Measures one point; every method adds to `self.result`."""

    def __init__(self, model: MambaLM, cfg: ProfileConfig, device: torch.device, peaks: DevicePeaks | None,
                 result: PointResult, count_flops: bool) -> None:
        self.model, self.cfg, self.device, self.peaks = model, cfg, device, peaks
        self.result = result
        self.count_flops = count_flops
        self.config = model.config
        self.cuda = device.type == "cuda"

    def run(self) -> None:
        r, cfg, model = self.result, self.cfg, self.model
        gen = torch.Generator().manual_seed(cfg.seed + r.seqlen + 7919 * r.batch)
        ids = torch.randint(0, self.config.vocab_size, (r.batch, r.seqlen), generator=gen).to(self.device)
        model.configure(path=r.path)
        if r.mode == "prefill":
            fn: Callable[[], object] = lambda: model(ids)  # noqa: E731
            costs = component_costs(self.config, seqlen=r.seqlen, batch=r.batch, mode="prefill", dtype=cfg.dtype)
            tokens = r.batch * r.seqlen
        else:
            cache = model.allocate_cache(r.batch)
            prefill: Callable[[], object] = lambda: model(ids, cache=cache)  # noqa: E731
            ttft = time_fn(prefill, self.device, rounds=cfg.rounds, warmup=cfg.warmup, graph=False)
            r.ttft_s, r.ttft_samples_s = ttft.median, list(ttft.seconds)
            token = ids[:, -1].contiguous()
            fn = lambda: model.step(token, cache)  # noqa: E731
            costs = component_costs(self.config, seqlen=r.seqlen, batch=r.batch, mode="decode", dtype=cfg.dtype)
            tokens = r.batch
            r.cache_bytes_per_sequence = sum(c.nbytes for c in cache) // r.batch
            r.cache_bytes_per_sequence_model = cache_bytes_per_sequence(self.config, cfg.dtype)
        self._time(fn, costs, tokens)
        if cfg.kernel_attribution:
            self._attribute(fn, costs)
        if cfg.cuda_graphs and self.cuda:
            self._graph(fn)
        if cfg.memory:
            self._memory(fn)
        if self.count_flops:
            self._flops(fn)
        if self.peaks is not None:
            place_on_roofline(r, self.peaks)

    def _rounds(self, fn: Callable[[], object]) -> int:
        """cfg.rounds, or more for a fast call: short calls are the noisiest (a scheduler tick is 4 ms)."""
        cfg = self.cfg
        if not cfg.min_time_s:
            return cfg.rounds
        estimate = time_fn(fn, self.device, rounds=1, warmup=0, graph=False).min
        wanted = math.ceil(cfg.min_time_s / (2 * max(estimate, 1e-9)))  # two calls per round: e2e and traced
        return min(10 * cfg.rounds, max(cfg.rounds, wanted))

    def _time(self, fn: Callable[[], object], costs: dict[str, Cost], tokens: int) -> None:
        r, cfg = self.result, self.cfg
        timer = SpanTimer(self.device)

        def traced() -> None:
            with timer.run():
                fn()

        # Eager on purpose: the spans are host-side records of the eager launches.
        samples = time_interleaved({"e2e": fn, "traced": traced}, self.device, rounds=self._rounds(fn), graph=False,
                                   warmup=cfg.warmup)
        e2e, traced_samples = samples["e2e"], samples["traced"]
        runs = timer.times()[cfg.warmup:]
        seen = {name for run in runs for name in run}
        names = [name for name in (*components_of(self.config), "mixer_fused") if name in seen]
        per_component = _split_samples(runs, traced_samples, names)
        medians = {name: _median(values) for name, values in per_component.items()}
        denominator = sum(medians.values()) or 1.0
        r.clock = e2e.clock
        r.time_s, r.samples_s = e2e.median, list(e2e.seconds)
        r.traced_time_s = traced_samples.median
        # Paired round by round (the traced and untraced calls of a round ran moments apart): drift cancels.
        r.coverage = paired_ratio(Samples(tuple(sum(run.values()) for run in runs), e2e.clock), e2e)
        r.tokens_per_s = tokens / e2e.median
        total = total_cost(costs)
        r.flops, r.bytes = total.flops, total.bytes
        for name, values in per_component.items():
            cost = costs.get(name)
            if name == "mixer_fused":
                cost = total_cost(costs[n] for n in ("in_proj", "conv1d", "x_proj", "ssm_scan", "gated_norm",
                                                     "out_proj") if n in costs)
            r.components.append(ComponentStats(
                name=name, time_s=medians[name], samples_s=values, share=medians[name] / denominator,
                flops=cost.flops if cost else 0.0, bytes=cost.bytes if cost else 0.0,
                matmul_flops=cost.matmul_flops if cost else 0.0,
            ))
        self._costs = costs

    def _attribute(self, fn: Callable[[], object], costs: dict[str, Cost]) -> None:
        r = self.result
        attribution = profile_runs(fn, self.device, self.cfg.profiler_runs)
        busy = split_fused(attribution.components, _gemm_shares(self.config, costs))
        r.busy_s = attribution.busy
        r.unclassified_kernels = attribution.unclassified
        if attribution.unit == "device" and r.time_s:
            r.busy_fraction = attribution.busy / r.time_s
            r.launch_bound = r.busy_fraction < self.cfg.launch_bound_threshold
        fused = r.component("mixer_fused")
        if fused is not None and fused.time_s is not None:
            self._split_fused_component(fused, attribution.components, busy)
        for c in r.components:
            if c.name == OTHER:
                c.busy_s = attribution.other
            elif c.name in busy:
                c.busy_s = busy[c.name]

    def _split_fused_component(self, fused: ComponentStats, raw: dict[str, float], busy: dict[str, float]) -> None:
        """Replace the fused mixer's one span by its components: the span's time split in proportion to the
        device time of their kernels inside it."""
        r, costs = self.result, self._costs
        fused_busy = sum(v for k, v in raw.items() if k.startswith("mixer_fused/"))
        if fused_busy <= 0:
            return
        parts = {name: busy.get(name, 0.0) for name in (*components_of(self.config), COPIES, "mixer_fused")
                 if name not in ("embedding", "norm", "lm_head")}
        index = r.components.index(fused)
        new = []
        for name, seconds in parts.items():
            if seconds <= 0:
                continue
            share = seconds / fused_busy
            cost = costs.get(name, Cost()) if name != "mixer_fused" else Cost()
            new.append(ComponentStats(
                name=name, time_s=fused.time_s * share, samples_s=[s * share for s in fused.samples_s],
                share=(fused.share or 0.0) * share, flops=cost.flops, bytes=cost.bytes,
                matmul_flops=cost.matmul_flops,
            ))
        r.components[index:index + 1] = new

    def _graph(self, fn: Callable[[], object]) -> None:
        r = self.result
        try:
            graph = time_fn(fn, self.device, rounds=self.cfg.rounds, warmup=self.cfg.warmup)
        except Exception as e:  # noqa: BLE001 - an uncapturable op (or no room for the graph's own memory pool)
            # must not cost the point its eager measurements
            with contextlib.suppress(Exception):
                _free(self.device)
            r.message = f"CUDA graph capture failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            return
        if graph.clock != "cuda_graph":  # timed eagerly instead: not a graph time
            r.message = f"CUDA graph capture failed: {graph.note}"
            return
        r.graph_time_s, r.graph_samples_s = graph.median, list(graph.seconds)

    def _memory(self, fn: Callable[[], object]) -> None:
        r = self.result
        mem = measure_memory(fn, self.device)
        r.peak_bytes, r.peak_activation_bytes = mem.peak_bytes, mem.peak_activation_bytes
        r.allocated_bytes, r.memory_method = mem.allocated_bytes, mem.method
        for c in r.components:
            m = mem.components.get(c.name)
            if m is not None:
                c.peak_bytes, c.allocated_bytes, c.retained_bytes = m.peak_bytes, m.allocated_bytes, m.retained_bytes

    def _flops(self, fn: Callable[[], object]) -> None:
        if self.result.path == "fused":  # its FLOPs are counted under one span; its components are a split of it
            return
        counted = flop_counter_by_component(fn)
        for c in self.result.components:
            c.counted_flops = counted.get(c.name, 0.0)

# Device time ----------------------------------------------------------------------------------------------------
# Summed kernel durations above this multiple of the wall time: the profiler's kernel records overlap. Seen at
# the largest GPU-bound points on an H200 (up to 1.75x at Mamba-2 1.3b, batch 4, L 16384), in GEMMs and scans
# alike, while the span timers and the CUDA-graph replay agreed with the wall time; the cause is not known. There
# the kernel times are not additive, and the spans (right once the GPU sets the pace) are the device time.
KERNEL_OVERLAP = 1.05


def kernels_overlap(point: PointResult) -> bool:
    """Whether `point`'s profiler kernel times sum to more than its wall time (beyond `KERNEL_OVERLAP`)."""
    return point.busy_fraction is not None and point.busy_fraction > KERNEL_OVERLAP


def device_time(point: PointResult, component: ComponentStats) -> float | None:
    """The time `component`'s work takes on the device at `point`: its kernels' summed time from the profiler
    (launch gaps excluded: right at launch-bound points, where span times are launch times), else its span time
    (on a CPU; without a trace; or where the kernel records overlap, see `KERNEL_OVERLAP`)."""
    if component.busy_s and point.busy_fraction is not None and not kernels_overlap(point):
        return component.busy_s
    return component.time_s


def place_on_roofline(point: PointResult, peaks: DevicePeaks) -> None:
    """Each component's achieved FLOP/s and bytes/s over its `device_time`, and its place under `peaks`."""
    for c in point.components:
        seconds = device_time(point, c)
        if c.bytes <= 0 or not seconds or seconds <= 0:
            continue
        rp = roofline_point(Cost(c.flops, c.bytes, c.matmul_flops), seconds, peaks)
        c.intensity, c.bound = rp.intensity, rp.bound
        c.achieved_flops_per_s, c.achieved_bytes_per_s = rp.achieved_flops_per_s, rp.achieved_bytes_per_s
        c.roofline_fraction = rp.fraction


# Scaling -----------------------------------------------------------------------------------------------------
def power_law(seqlens: Sequence[float], times: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of log t = k log L + c: returns (k, r^2). Needs >= 2 distinct lengths, times > 0."""
    x, y = np.log(np.asarray(seqlens, dtype=float)), np.log(np.asarray(times, dtype=float))
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError(f"a power law needs at least two distinct lengths, got {list(seqlens)}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"a power law needs positive times, got {list(times)}")
    k, c = np.polyfit(x, y, 1)
    residual = y - (k * x + c)
    spread = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / spread if spread > 0 else 1.0
    return float(k), r2


def scaling_time(point: PointResult, name: str) -> float | None:
    """The time of component `name` (or "total") at `point` that the scaling fits and plots use: see
    `fit_scaling`."""
    if name == "total":
        return point.graph_time_s or point.time_s
    c = point.component(name)
    return device_time(point, c) if c is not None else None


def fit_scaling(points: Sequence[PointResult]) -> list[ScalingFit]:
    """time ~ L^k per (path, mode, batch) series and component (and "total"), over finished points.

    Device times are fitted, not wall times, so that a launch-bound series (whose wall time is the CPU's and
    barely grows with L) still shows how the work scales: per component its `device_time`, for "total" the
    CUDA-graph replay where there is one. On a CPU both are the measured times."""
    series: dict[tuple[str, str, int], list[PointResult]] = {}
    for p in points:
        if p.status == "ok" and p.time_s:
            series.setdefault((p.path, p.mode, p.batch), []).append(p)
    fits = []
    for (path, mode, batch), pts in series.items():
        pts = sorted(pts, key=lambda p: p.seqlen)
        names = ["total"] + list(dict.fromkeys(c.name for p in pts for c in p.components))
        for name in names:
            xs, ys = [], []
            for p in pts:
                value = scaling_time(p, name)
                if value and value > 0:
                    xs.append(p.seqlen)
                    ys.append(value)
            if len(set(xs)) < 2:
                continue
            k, r2 = power_law(xs, ys)
            half = len(xs) // 2
            k_tail = power_law(xs[half:], ys[half:])[0] if len(xs) - half >= 3 else None
            fits.append(ScalingFit(path, mode, batch, name, k, r2, k_tail, xs))
    return fits


# The sweep -----------------------------------------------------------------------------------------------------
def _load(model_or_spec: MambaLM | ModelConfig | str | Path, cfg: ProfileConfig) -> tuple[MambaLM, str]:
    dtype = _DTYPES[cfg.dtype]
    if isinstance(model_or_spec, MambaLM):
        p = next(model_or_spec.parameters())
        if p.device.type != torch.device(cfg.device).type or p.dtype != dtype:
            raise ValueError(
                f"the model is on {p.device} in {p.dtype}, the config asks for {cfg.device} in {cfg.dtype}; "
                "pass a matching device/dtype (or a preset name / checkpoint path to build it there)"
            )
        return model_or_spec, getattr(model_or_spec, "name_or_path", None) or "model"
    if isinstance(model_or_spec, ModelConfig):
        return build_model(model_or_spec, device=cfg.device, dtype=dtype, seed=cfg.seed), "custom"
    return get_model(model_or_spec, device=cfg.device, dtype=dtype), str(model_or_spec)


def _model_info(model: MambaLM, name: str, cfg: ProfileConfig) -> ModelInfo:
    params = list(model.parameters())
    return ModelInfo(
        name=name, version=model.config.version,
        config={k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(model.config).items()},
        params=sum(p.numel() for p in {id(p): p for p in params}.values()),
        weights_bytes=tensor_bytes([*params, *model.buffers()]), device=cfg.device, dtype=cfg.dtype,
        backends=_resolved_backends(model, cfg.backend, torch.device(cfg.device)),
    )


def _fused_available(version: int) -> str | None:
    status = ops.backend_status().get(_FUSED_OP[version], {}).get("cuda", "unavailable: unknown op")
    return None if status == "available" else status


def plan_points(cfg: ProfileConfig) -> list[PointResult]:
    """The points of a resolved config's sweep, in the order they run (pending)."""
    # The fused path has no decode step (decode is the unfused path's): no such points are planned.
    return [
        PointResult(path=path, mode=mode, batch=batch, seqlen=seqlen)
        for path in cfg.paths for mode in cfg.modes for batch in cfg.batch_sizes for seqlen in cfg.seqlens
        if not (path == "fused" and mode == "decode")
    ]


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def profile(
    model_or_spec: MambaLM | ModelConfig | str | Path, config: ProfileConfig | None = None, *,
    peaks: DevicePeaks | None = None, name: str | None = None, resume: ProfileResult | None = None,
    on_point: Callable[[ProfileResult], None] | None = None, **overrides: Any,
) -> ProfileResult:
    """Profile a model (a `MambaLM`, a `ModelConfig`, a preset name or a checkpoint directory; random weights
    for presets) over the sweep of `config` (keyword `overrides` replace its fields).

    Returns every point, finished or not: an out-of-memory point has status "oom" and ends its series, points
    past `budget_s` are "skipped", a point that raised anything else is "error" (with the message).
    `peaks`: the device's peaks, if already measured. `resume`: an earlier (interrupted) result of the same
    model; its finished and out-of-memory points are taken over instead of measured again. `on_point`: called
    with the result so far after every point (to save progress)."""
    cfg = dataclasses.replace(config or ProfileConfig(), **overrides).resolved()
    device = torch.device(cfg.device)
    previous_threads = torch.get_num_threads()
    if cfg.cpu_threads is not None and device.type == "cpu":
        torch.set_num_threads(cfg.cpu_threads)
    start = time.monotonic()
    try:
        # As the benchmark suite: flush subnormals, which the reference scans' decaying states produce and which
        # x86 cores handle ~100x slower (the CUDA kernels flush them too).
        with torch.inference_mode(), flushing_subnormals():
            model, default_name = _load(model_or_spec, cfg)
            saved = [(m, m.path, m.backend) for m in model.mixers]
            try:
                model.eval()
                model.configure(backend=cfg.backend)
                result = _sweep(model, cfg, device, peaks, name or default_name, start, resume, on_point)
            finally:
                for mixer, path, backend in saved:
                    mixer.path, mixer.backend = path, backend
    finally:
        torch.set_num_threads(previous_threads)
    result.wall_s = time.monotonic() - start
    return result


def _sweep(model: MambaLM, cfg: ProfileConfig, device: torch.device, peaks: DevicePeaks | None, name: str,
           start: float, resume: ProfileResult | None, on_point: Callable[[ProfileResult], None] | None,
           ) -> ProfileResult:
    notes: list[str] = []
    if peaks is None and cfg.roofline:
        peaks = measure_peaks(device, _DTYPES[cfg.dtype] if device.type == "cuda" else torch.float32)
    info = _model_info(model, name, cfg)
    if device.type == "cuda" and any(v == "reference" for v in info.backends.values()):
        notes.append("some ops ran their pure-PyTorch reference on the GPU (mamba-ssm / causal-conv1d missing): "
                     f"{info.backends}")
    points = plan_points(cfg)
    fused_missing = _fused_available(model.config.version) if "fused" in cfg.paths else None
    stopped: dict[tuple[str, str, int], str] = {}  # series -> why it ended
    last_wall: dict[tuple[str, str, int], tuple[int, float]] = {}
    counted: set[tuple[str, str, int]] = set()
    done = _resumable(resume, model.config, cfg)

    def partial() -> ProfileResult:
        return ProfileResult(model=info, config=cfg, points=points, fits=fit_scaling(points), peaks=peaks,
                             notes=notes)

    progress = _progress(len(points), cfg.progress)
    for i, point in enumerate(points):
        series = (point.path, point.mode, point.batch)
        progress.set_description(f"{name} {point.path} {point.mode} b={point.batch} L={point.seqlen}")
        if point.key in done:
            points[i] = point = done[point.key]
            if point.status == "oom":
                stopped[series] = f"series ended by out of memory at L={point.seqlen}"
            if any(c.counted_flops is not None for c in point.components):
                counted.add(series)
            progress.update(1)
            continue
        reason = _skip_reason(point, cfg, device, fused_missing, stopped.get(series), last_wall.get(series), start)
        if reason is None and (reason := _memory_reason(model.config, point, cfg, device)) is not None:
            stopped[series] = f"series ended: L={point.seqlen} would not fit in memory"
        if reason is not None:
            point.status, point.message = "skipped", reason
            progress.update(1)
            continue
        t0 = time.monotonic()
        try:
            _Point(model, cfg, device, peaks, point, series not in counted and cfg.count_flops).run()
            point.status = "ok"
            counted.add(series)
        except Exception as e:  # noqa: BLE001 - one point's failure is recorded, the sweep goes on
            _reset_point(point)
            if is_out_of_memory(e):
                point.status = "oom"
                point.message = f"out of memory: {str(e).splitlines()[0][:300]}"
                stopped[series] = f"series ended by out of memory at L={point.seqlen}"
            else:
                point.status = "error"
                point.message = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            _free(device)  # what the failed point held is garbage now; give it back before the next point
        point.wall_s = time.monotonic() - t0
        last_wall[series] = (point.seqlen, point.wall_s)
        progress.update(1)
        if on_point is not None:
            on_point(partial())
    progress.close()
    return partial()


def _resumable(resume: ProfileResult | None, config: ModelConfig, cfg: ProfileConfig) -> dict[tuple, PointResult]:
    if resume is None:
        return {}
    if ModelConfig(**resume.model.config) != config:
        raise ValueError(f"cannot resume from a profile of another model ({resume.model.name!r}: "
                         f"{resume.model.config})")
    if (resume.model.device, resume.model.dtype) != (cfg.device, cfg.dtype):
        raise ValueError(f"cannot resume a profile taken on {resume.model.device} in {resume.model.dtype} on "
                         f"{cfg.device} in {cfg.dtype}")
    return {p.key: p for p in resume.points if p.status in ("ok", "oom")}


def _reset_point(point: PointResult) -> None:
    fresh = PointResult(path=point.path, mode=point.mode, batch=point.batch, seqlen=point.seqlen)
    for f in dataclasses.fields(PointResult):
        setattr(point, f.name, getattr(fresh, f.name))


def _skip_reason(point: PointResult, cfg: ProfileConfig, device: torch.device, fused_missing: str | None,
                 stopped: str | None, last: tuple[int, float] | None, start: float) -> str | None:
    if stopped is not None:
        return stopped
    if point.path == "fused":
        if device.type != "cuda":
            return "the fused path needs CUDA tensors"
        if fused_missing:
            return f"the fused kernel is {fused_missing}"
    if cfg.budget_s is not None:
        elapsed = time.monotonic() - start
        # The next point of a series takes about the last one's time scaled by the length ratio (at least).
        estimate = last[1] * max(1.0, point.seqlen / last[0]) if last else 0.0
        if elapsed + estimate > cfg.budget_s:
            return f"time budget of {cfg.budget_s:.0f} s reached ({elapsed:.0f} s spent, next point ~{estimate:.0f} s)"
    return None


def _memory_reason(config: ModelConfig, point: PointResult, cfg: ProfileConfig, device: torch.device) -> str | None:
    """Why `point` must not start: its memory bound is above what the device has free now (a CPU would be driven
    into the OOM killer, which ends the whole process, not just the point)."""
    free = available_memory(device)
    if free is None:
        return None
    need = point_footprint(config, mode=point.mode, seqlen=point.seqlen, batch=point.batch, dtype=cfg.dtype).total
    if need <= free:
        return None
    return f"needs up to {gib(need)} (the memory bound), {gib(free)} free on {device.type}"


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, leave=False, unit="point")


def reanalyse(result: ProfileResult) -> ProfileResult:
    """`result` with what is derived from its measurements (each component's place under the roofline, the
    scaling fits) recomputed by this version's rules: for profiles measured by an older perfmamba."""
    if result.peaks is not None:
        for p in result.ok_points():
            place_on_roofline(p, result.peaks)
    return dataclasses.replace(result, fits=fit_scaling(result.points))


def merge_results(results: Sequence[ProfileResult]) -> ProfileResult:
    """One result from several runs of the same model and settings (e.g. a sweep resumed point by point): the
    last result's model, config and peaks, the points of all (a later finished point replaces an earlier one
    with the same key), the seqlens and batch sizes of all, and fits over the union."""
    if not results:
        raise ValueError("merge_results needs at least one result")
    by_key: dict[tuple, PointResult] = {}
    for res in results:
        if res.model.name != results[0].model.name or res.model.config != results[0].model.config:
            raise ValueError(f"cannot merge profiles of different models: {results[0].model.name!r} and "
                             f"{res.model.name!r}")
        for p in res.points:
            if p.key not in by_key or p.status == "ok" or by_key[p.key].status != "ok":
                by_key[p.key] = p
    points = sorted(by_key.values(), key=lambda p: (p.path, MODES.index(p.mode), p.batch, p.seqlen))
    last = results[-1]
    config = dataclasses.replace(
        last.config,
        seqlens=tuple(sorted({p.seqlen for p in points})), batch_sizes=tuple(sorted({p.batch for p in points})),
    )
    notes = list(dict.fromkeys(n for r in results for n in r.notes))
    return ProfileResult(model=last.model, config=config, points=points, fits=fit_scaling(points),
                         peaks=last.peaks, notes=notes, wall_s=sum(r.wall_s for r in results))


__all__ = [
    "CPU_SEQLENS", "GPU_SEQLENS", "PROFILE_VERSION", "STATUSES", "ComponentStats", "ModelInfo",
    "KERNEL_OVERLAP", "PointResult", "ProfileConfig", "ProfileResult", "ScalingFit", "device_time", "fit_scaling",
    "is_out_of_memory", "kernels_overlap", "merge_results", "place_on_roofline", "plan_points", "power_law",
    "profile", "reanalyse", "scaling_time",
]
