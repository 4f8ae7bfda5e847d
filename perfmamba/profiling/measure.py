"""One point of a profile, measured: `measure_point(model, config, point)` fills a `PointResult`.

1. Time. Prefill, and decode where `decode_timing="eager"` or off CUDA: the plain call and the same call with a
   `SpanTimer` in run interleaved, round by round (`perfmamba.timing`: warm-up, L2 flush and synchronisation on a
   GPU); the end-to-end time is the untraced median, each component's the median of its per-run self time, and
   "other" what the traced run spent outside every span. Decode on CUDA by default: the step replayed from a CUDA
   graph, its total from the replay and each component's from its kernels inside the replay (`graph_attribution`):
   what a server that graphs its step pays, with nothing of the host in it.
2. On a GPU, a `torch.profiler` pass attributes every kernel's device time to its component (the busy time).
   Busy time well below the wall time means the run is launch-bound: the per-span times are launch times.
3. Memory: one run with every span instrumented, plus the decode cache's bytes per sequence.
4. Costs: the cost model's FLOPs and minimum bytes per component, checked against `torch.utils.flop_counter`
   once per series, and each component's place under the measured roofline (`analysis`).
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
from collections.abc import Callable, Sequence

import torch

from perfmamba.models import MambaLM, ModelConfig
from perfmamba.profiling.analysis import place_on_roofline
from perfmamba.profiling.config import ProfileConfig
from perfmamba.profiling.costs import (
    Cost,
    cache_bytes_per_sequence,
    component_costs,
    components_of,
    flop_counter_by_component,
    in_proj_width,
    total_cost,
)
from perfmamba.profiling.kernels import GemmKey, graph_attribution, profile_runs, split_fused
from perfmamba.profiling.memory import measure_memory
from perfmamba.profiling.result import ComponentStats, PointResult
from perfmamba.profiling.roofline import DevicePeaks
from perfmamba.profiling.timers import COPIES, OTHER, SpanTimer
from perfmamba.timing import Samples, l2_flush, paired_ratio, time_fn, time_interleaved


def is_out_of_memory(error: BaseException) -> bool:
    """An allocation failure (CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(error, MemoryError)
    )


def free_memory(device: torch.device) -> None:
    """Give back what a finished (or failed) point held before the next one starts."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def _split_samples(runs: list[dict[str, float]], traced: Samples, names: Sequence[str]) -> dict[str, list[float]]:
    """Per component, its self time in each traced run; "other" is the run's time outside every span."""
    out = {name: [run.get(name, 0.0) for run in runs] for name in names}
    out[OTHER] = [max(0.0, total - sum(run.values())) for run, total in zip(runs, traced.seconds, strict=True)]
    return out


def _gemm_shares(config: ModelConfig, costs: dict[str, Cost]) -> dict[str, float]:
    names = ("in_proj", "x_proj", "out_proj") if config.version == 1 else ("in_proj", "out_proj")
    return {name: costs[name].matmul_flops for name in names}


def gemm_names(config: ModelConfig, tokens: int) -> dict[GemmKey, str]:
    """The projection each matrix product of a forward over `tokens` tokens belongs to, by its sorted (M, K, N):
    the fused kernels' GEMMs are one cuBLAS kernel name each, so only their shapes tell them apart. Split by
    FLOPs instead, x_proj (skinny, memory-bound) got a fifth of its real time and sat at 239% of its roof.
    Shapes that two projections share are left out (those GEMMs fall back to the FLOP split)."""
    di, d = config.d_inner, config.d_model
    names: dict[GemmKey, set[str]] = {}
    for N in set(config.d_states):
        shapes = {"in_proj": (d, in_proj_width(config, N)), "out_proj": (di, d)}
        if config.version == 1:
            r = config.resolved_dt_rank
            shapes |= {"x_proj": (di, r + 2 * N), "x_proj/dt": (r, di)}
        for name, (k, n) in shapes.items():
            names.setdefault(tuple(sorted((tokens, k, n))), set()).add(name.split("/")[0])
    return {key: next(iter(v)) for key, v in names.items() if len(v) == 1}


class PointMeasurement:
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
        total = total_cost(costs)
        r.flops, r.bytes = total.flops, total.bytes
        self._costs = costs
        graph_decode = r.mode == "decode" and self.cuda and cfg.decode_timing == "graph"
        if not (graph_decode and self._time_graph(fn, costs)):
            self._time(fn, costs)
            if cfg.kernel_attribution:
                self._attribute(fn, costs, tokens)
            if cfg.cuda_graphs and self.cuda:
                self._graph(fn)
        r.tokens_per_s = tokens / r.time_s
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

    def _time(self, fn: Callable[[], object], costs: dict[str, Cost]) -> None:
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
        medians = {name: statistics.median(values) for name, values in per_component.items()}
        denominator = sum(medians.values()) or 1.0
        r.clock = e2e.clock
        r.time_s, r.samples_s = e2e.median, list(e2e.seconds)
        r.traced_time_s = traced_samples.median
        # Paired round by round (the traced and untraced calls of a round ran moments apart): drift cancels.
        r.coverage = paired_ratio(Samples(tuple(sum(run.values()) for run in runs), e2e.clock), e2e)
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

    def _capture_failed(self, e: Exception) -> str:
        """Give back what the failed capture held (its memory pool), and say why it failed."""
        with contextlib.suppress(Exception):
            free_memory(self.device)
        return f"CUDA graph capture failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"

    def _graph_samples(self, fn: Callable[[], object]) -> Samples | None:
        """`fn` timed as CUDA-graph replays, or None with the reason in the point's message: an uncapturable call
        (or no room for the graph's own memory pool) must not cost the point its other measurements."""
        try:
            samples = time_fn(fn, self.device, rounds=self.cfg.rounds, warmup=self.cfg.warmup)
        except Exception as e:  # noqa: BLE001 - see the docstring
            self.result.message = self._capture_failed(e)
            return None
        if samples.clock != "cuda_graph":  # timed eagerly instead: not a graph time
            self.result.message = f"CUDA graph capture failed: {samples.note}"
            return None
        return samples

    def _time_graph(self, fn: Callable[[], object], costs: dict[str, Cost]) -> bool:
        """The call replayed from a CUDA graph: its total from the replay, each component's from its kernels in
        the replay. False (and a message) where the call cannot be captured: the caller times it eagerly."""
        r, cfg = self.result, self.cfg
        samples = self._graph_samples(fn)
        if samples is None:
            r.message = f"timed eagerly: {r.message}"
            return False
        try:
            attribution = graph_attribution(fn, self.device, max(cfg.profiler_runs, 5), flush=l2_flush(self.device))
        except Exception as e:  # noqa: BLE001 - as an uncapturable step: timed eagerly, and says so
            r.message = f"timed eagerly: {self._capture_failed(e)}"
            return False
        r.clock, r.time_s, r.samples_s = samples.clock, samples.median, list(samples.seconds)
        r.graph_time_s, r.graph_samples_s = r.time_s, list(samples.seconds)
        r.busy_s = attribution.busy
        r.busy_fraction = r.coverage = attribution.busy / r.time_s
        r.launch_bound = r.busy_fraction < cfg.launch_bound_threshold
        for name, values in attribution.samples.items():
            seconds = statistics.mean(values)
            cost = costs.get(name, Cost())
            r.components.append(ComponentStats(
                name=name, time_s=seconds, samples_s=list(values), share=seconds / (attribution.busy or 1.0),
                busy_s=seconds, flops=cost.flops, bytes=cost.bytes, matmul_flops=cost.matmul_flops,
            ))
        order = [*components_of(self.config), OTHER]
        r.components.sort(key=lambda c: order.index(c.name) if c.name in order else len(order))
        return True

    def _attribute(self, fn: Callable[[], object], costs: dict[str, Cost], tokens: int) -> None:
        r = self.result
        names = gemm_names(self.config, tokens) if r.path == "fused" else None
        attribution = profile_runs(fn, self.device, self.cfg.profiler_runs, gemm_names=names)
        busy = split_fused(attribution.components, _gemm_shares(self.config, costs))
        r.busy_s = attribution.busy
        r.unclassified_kernels = attribution.unclassified
        if attribution.unit == "device" and r.time_s:
            # Against the untraced call, the user's: the profiler's own host cost would make GPU-bound calls look
            # launch-bound (mamba1-130m at 16k tokens: 61% busy against the profiled runs' span, 70%+ untraced).
            r.busy_fraction = attribution.busy / r.time_s
            r.profiled_time_s = attribution.wall
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
        samples = self._graph_samples(fn)
        if samples is not None:
            self.result.graph_time_s, self.result.graph_samples_s = samples.median, list(samples.seconds)

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


def measure_point(model: MambaLM, cfg: ProfileConfig, point: PointResult, *, peaks: DevicePeaks | None = None,
                  count_flops: bool = False) -> PointResult:
    """Measure `point` of a resolved `cfg` on `model` (its device, dtype and backend already set); fills and
    returns `point`. `count_flops`: check the cost model against `torch.utils.flop_counter` here."""
    PointMeasurement(model, cfg, torch.device(cfg.device), peaks, point, count_flops).run()
    return point
