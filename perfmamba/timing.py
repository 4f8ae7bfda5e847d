"""Timing one call on a CPU or a CUDA device, the one way every part of perfmamba measures (benchmarks, profiler,
asv suite, results scripts). Returns the raw samples, with the clock and the L2 state they were taken under.

- CPU: `time.perf_counter()` around each call (clock "perf_counter").
- CUDA, by default: the call is captured K times into a CUDA graph and each round replays the graph between two
  CUDA events (clock "cuda_graph"); a sample is the replay time / K. Launches then cost the GPU ~1 us each and
  nothing of the host's speed is in the number: the same scan repeats within 0.25% across processes this way,
  against 15-37% for events around eager calls (docs/results/gate_quality.md). K is chosen so that one replay
  lasts at least `MIN_REPLAY_S`.
- CUDA, where a call cannot be captured (a host sync, a data-dependent branch) or `graph=False`: CUDA events
  around each eager call (clock "cuda_event"). Such samples are *host-timed*: the launch path is inside them,
  and they say so (`Samples.host_timed`); the gate judges them only against their own, wider threshold.

L2 state ("flushed" by default): before every call, inside the graph too, a read of a buffer twice the L2 size
evicts what the previous call left there, so a small op does not look faster than it would inside a model. A read,
not a write: a memset leaves dirty lines that the next call would pay to write back. With a graph the flushes are
captured into a second graph of their own, replayed each round, and their time is subtracted. "warm"
(`flush_l2=False`) keeps the cache as the previous call left it, on purpose.

Memory placement: callables timed side by side (`time_interleaved`, the harness's baselines) are captured into
one shared graph memory pool, so that each runs on the same activation addresses. Each graph in its own pool put
a placement bias of 1.5-2% into the ratio of two identical Mamba-1 prefills (H200, A/A 0.984; shared: 0.9996-1.0004,
docs/results/vs_mamba_ssm.md). Sharing is safe because nothing allocated inside a capture outlives it: outputs are
dropped, decode caches are allocated before the capture and updated in place, and lazy allocations happen in the
eager warm-up. A callable that kept a tensor allocated during its capture would have it overwritten by the other
graphs' replays (they may reuse its addresses, and they replay in either order).
"""

from __future__ import annotations

import contextlib
import functools
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch

CLOCKS = ("cuda_graph", "cuda_event", "perf_counter")
L2_STATES = ("flushed", "warm", "none")
# One replay should last at least this long (events resolve ~0.5 us; a scheduler tick on the host side is
# irrelevant to a replay), and capture at most this many calls.
MIN_REPLAY_S = 1e-3
MAX_CALLS = 64
# torch's own default, before configure_process pins the benchmark processes to fewer threads.
DEFAULT_CPU_THREADS = torch.get_num_threads()


@dataclass(frozen=True)
class Samples:
    """Seconds per call, one per measured round (warm-up rounds excluded). `calls`: calls averaged into each
    sample (the calls captured per graph replay; 1 otherwise). `eager_s`: on a GPU, the median time of one call
    launched eagerly, measured while warming up; `eager_s / median` > 1 is the share of the host's launch path
    that the graph removed (near 1: the GPU sets the pace even eagerly)."""

    seconds: tuple[float, ...]
    clock: str  # one of CLOCKS
    l2: str = "none"  # one of L2_STATES
    calls: int = 1
    eager_s: float | None = None
    note: str | None = None  # why a GPU call was timed eagerly, where a graph was asked for

    def __post_init__(self) -> None:
        if not self.seconds:
            raise ValueError("Samples needs at least one measured round")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {self.clock!r}")
        if self.l2 not in L2_STATES:
            raise ValueError(f"l2 must be one of {L2_STATES}, got {self.l2!r}")

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.seconds)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def iqr(self) -> float:
        if len(self.seconds) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.seconds, n=4, method="inclusive")
        return q3 - q1

    @property
    def rounds(self) -> int:
        return len(self.seconds)

    @property
    def host_timed(self) -> bool:
        """Eager GPU timing: the host's launch path is inside every sample."""
        return self.clock == "cuda_event"

    @property
    def eager_over_graph(self) -> float | None:
        if self.eager_s is None or self.clock != "cuda_graph":
            return None
        return self.eager_s / self.median

    def summary(self) -> dict[str, float | int | str | bool | None]:
        return {"median_s": self.median, "mean_s": self.mean, "min_s": self.min, "iqr_s": self.iqr,
                "rounds": self.rounds, "clock": self.clock, "l2": self.l2, "graph_calls": self.calls,
                "host_timed": self.host_timed, "eager_median_s": self.eager_s,
                "eager_over_graph": self.eager_over_graph, "timing_note": self.note}


# Process settings ----------------------------------------------------------------------------------------
def configure_process(cpu_threads: int | None = None) -> None:
    """Process settings every benchmark runs under. Subnormal floats are flushed to zero: the reference scans'
    decaying states underflow into subnormals, which x86 cores handle ~100x slower (a 10x slower block on the
    tiny presets), while the CUDA kernels are built with fast math, which flushes them too. `cpu_threads` pins
    torch's intra-op threads (None: leave torch's default). CPU allocations below 32 MiB come from a heap that is
    never trimmed (`heap_allocations`); unlike the others, that setting is not undone."""
    torch.set_flush_denormal(True)
    heap_allocations()
    if cpu_threads is not None:
        torch.set_num_threads(cpu_threads)


# glibc's mallopt parameters; the mmap threshold every 64-bit glibc accepts (older ones refuse more than 32 MiB);
# a trim threshold of -1 turns trimming off
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, MMAP_THRESHOLD = -1, -3, 32 << 20


@functools.cache
def heap_allocations() -> bool:
    """glibc only: serve CPU allocations below 32 MiB from the heap, and never give the heap back to the system.
    By default glibc moves its mmap threshold up to the size of the first large block a process frees, so one
    process pages in fresh mmaps on every call of a reference scan and the next does not. One benchmark was
    bimodal between processes that way (mamba1-tiny pruned prefill, op level, 2-core CPU, 8 processes: the pruned
    scan 23-24 ms in some, 26-29 ms in others, speedups 0.98-1.18; 1.11-1.19 with the thresholds fixed by
    environment variables). Returns whether both settings took (False off glibc; a preloaded allocator such as
    jemalloc ignores them)."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    took = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), mallopt(M_TRIM_THRESHOLD, -1)]
    return all(took)


def subnormals_flushed() -> bool:
    """Whether the CPU now flushes subnormal floats to zero (torch has a setter but no getter)."""
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # a subnormal in fp32
    return bool((tiny * 1.0).item() == 0.0)


@contextlib.contextmanager
def flushing_subnormals() -> Iterator[None]:
    """`configure_process`'s subnormal flushing within the block only, restored afterwards: library calls
    (`perfmamba.profile`) must not change the floating-point mode of the caller's process."""
    was = subnormals_flushed()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was)


@contextlib.contextmanager
def all_cpu_threads() -> Iterator[None]:
    """Within the block, torch's default thread count (for untimed work such as training a model)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(DEFAULT_CPU_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# The L2 flush --------------------------------------------------------------------------------------------
def l2_cache_bytes(device: torch.device) -> int:
    """The L2 size of a CUDA device (50 MB on an H100, 60 MB on an H200); 0 elsewhere."""
    if device.type != "cuda":
        return 0
    props = torch.cuda.get_device_properties(device)
    # Older torch builds lack the attribute; 64 MiB covers every current data-centre GPU.
    return int(getattr(props, "L2_cache_size", 0) or 64 * 2**20)


@functools.cache
def _flush_buffer(device: torch.device) -> torch.Tensor:
    # One buffer per device, shared by every timer: twice the L2, so reading it evicts everything cached before.
    # Never an inference tensor, though the first timer may be made under torch.inference_mode().
    with torch.inference_mode(False):
        return torch.ones(2 * l2_cache_bytes(device) // 4, dtype=torch.int32, device=device)


def _flush(buffer: torch.Tensor) -> None:
    buffer.amax()


def l2_flush(device: torch.device | str) -> Callable[[], None]:
    """The L2 flush every timer here runs before a call, as a callable (for profilers that replay the same)."""
    buffer = _flush_buffer(torch.device(device))
    return lambda: _flush(buffer)


def _event() -> torch.cuda.Event:
    return torch.cuda.Event(enable_timing=True)


# Timers --------------------------------------------------------------------------------------------------
class RoundTimer:
    """Times `fn` once per call: perf_counter on a CPU, CUDA events around the eager call on a GPU (host-timed).
    `prepare()` readies the next round outside the timed region (the L2 flush, then a synchronize, so that a
    round starts on an idle GPU)."""

    def __init__(self, fn: Callable[[], object], device: torch.device | str, *, flush_l2: bool = True) -> None:
        self.fn = fn
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._flush = _flush_buffer(self.device) if self.cuda and flush_l2 else None
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._host: list[float] = []
        self.fallback_reason: str | None = None  # why a graph was not used, where one was asked for

    @property
    def clock(self) -> str:
        return "cuda_event" if self.cuda else "perf_counter"

    @property
    def l2(self) -> str:
        return "none" if not self.cuda else ("flushed" if self._flush is not None else "warm")

    def prepare(self) -> None:
        if self.cuda:
            if self._flush is not None:
                _flush(self._flush)
            torch.cuda.synchronize(self.device)

    def __call__(self) -> None:
        if self.cuda:
            start, end = _event(), _event()
            start.record()
            self.fn()
            end.record()
            end.synchronize()
            self._events.append((start, end))
        else:
            t0 = time.perf_counter()
            self.fn()
            self._host.append(time.perf_counter() - t0)

    def samples(self, skip: int = 0) -> Samples:
        """The samples of every round so far but the first `skip` (the warm-up rounds)."""
        if self.cuda:
            seconds = [s.elapsed_time(e) / 1e3 for s, e in self._events]
        else:
            seconds = list(self._host)
        return Samples(tuple(seconds[skip:]), self.clock, self.l2, note=self.fallback_reason)

    def round(self) -> None:
        self.prepare()
        self()


class GraphTimer:
    """Times `fn` as `calls` calls captured in one CUDA graph, one replay per round (see the module docstring).
    Warms `fn` up eagerly first (Triton compiles and autotunes there, never inside a capture) and keeps the
    eager time of those calls as `eager_s`. Raises whatever the capture raises: `make_timer` falls back."""

    def __init__(self, fn: Callable[[], object], device: torch.device | str, *, flush_l2: bool = True,
                 calls: int | None = None, warmup_calls: int = 3, pool: tuple | None = None) -> None:
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"GraphTimer needs a CUDA device, got {self.device}")
        self.fn = fn
        self._pool = pool  # shared with the timers of the callables this one is compared with (module docstring)
        self._flush = _flush_buffer(self.device) if flush_l2 else None
        self.eager_s = self._warm_up(max(2, warmup_calls))
        graph = None
        if calls is None:
            # The probe gets a private pool: it is dropped unless it is the final graph, and a shared pool whose
            # only graph is dropped while one of its blocks lives on (a cuBLAS workspace) trips an assert in
            # torch when the next capture asks for it.
            probe = self._capture(1, pool=None)
            once = _replay_seconds(probe, self.device, times=3)
            calls = min(MAX_CALLS, max(1, math.ceil(MIN_REPLAY_S / max(once, 1e-9))))
            graph = probe if calls == 1 and self._pool is None else None
            del probe
        self.calls = calls
        self._graph = graph if graph is not None else self._capture(calls, pool=self._pool)
        self._flush_graph = (self._capture(calls, flush_only=True, pool=self._pool) if self._flush is not None
                             else None)
        self._events: list[tuple[torch.cuda.Event, ...]] = []

    clock = "cuda_graph"

    @property
    def l2(self) -> str:
        return "flushed" if self._flush is not None else "warm"

    def _warm_up(self, n: int) -> float:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        pairs = []
        with torch.cuda.stream(side):
            for _ in range(n):
                start, end = _event(), _event()
                start.record()
                self.fn()
                end.record()
                pairs.append((start, end))
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)
        return statistics.median(s.elapsed_time(e) / 1e3 for s, e in pairs[1:])  # the first call compiles

    def _capture(self, calls: int, *, pool: tuple | None, flush_only: bool = False) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            for _ in range(calls):
                if self._flush is not None:
                    _flush(self._flush)
                if not flush_only:
                    self.fn()
        torch.cuda.synchronize(self.device)
        return graph

    def prepare(self) -> None:
        torch.cuda.synchronize(self.device)

    def __call__(self) -> None:
        events = [_event() for _ in range(4 if self._flush_graph is not None else 2)]
        events[0].record()
        self._graph.replay()
        events[1].record()
        if self._flush_graph is not None:
            events[2].record()
            self._flush_graph.replay()
            events[3].record()
        events[-1].synchronize()
        self._events.append(tuple(events))

    def samples(self, skip: int = 0) -> Samples:
        seconds = []
        for ev in self._events[skip:]:
            total = ev[0].elapsed_time(ev[1]) / 1e3
            flush = ev[2].elapsed_time(ev[3]) / 1e3 if len(ev) == 4 else 0.0
            # Rounding of two event pairs can leave a call faster than the flush alone: keep samples positive.
            seconds.append(max(total - flush, 1e-9) / self.calls)
        return Samples(tuple(seconds), self.clock, self.l2, self.calls, self.eager_s)

    def round(self) -> None:
        self.prepare()
        self()


def _replay_seconds(graph: torch.cuda.CUDAGraph, device: torch.device, times: int) -> float:
    graph.replay()  # the first replay uploads the graph
    start, end = _event(), _event()
    start.record()
    for _ in range(times):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / times


Timer = RoundTimer | GraphTimer


def shared_pool(device: torch.device | str) -> tuple | None:
    """One graph memory pool for timers whose callables are compared (see the module docstring); None off CUDA."""
    return torch.cuda.graph_pool_handle() if torch.device(device).type == "cuda" else None


def make_timer(fn: Callable[[], object], device: torch.device | str, *, graph: bool = True,
               flush_l2: bool = True, pool: tuple | None = None) -> Timer:
    """A graph-replay timer on CUDA when `graph` and the call can be captured (into `pool` if given: then nothing
    `fn` allocates may outlive its call, see the module docstring), else an eager `RoundTimer` whose
    `fallback_reason` says why no graph (its samples are host-timed)."""
    device = torch.device(device)
    if device.type != "cuda" or not graph:
        return RoundTimer(fn, device, flush_l2=flush_l2)
    try:
        return GraphTimer(fn, device, flush_l2=flush_l2, pool=pool)
    except Exception as e:  # noqa: BLE001 - any capture failure means "time it eagerly, and say so"
        torch.cuda.synchronize(device)
        timer = RoundTimer(fn, device, flush_l2=flush_l2)
        timer.fallback_reason = f"not capturable in a CUDA graph ({type(e).__name__}: {str(e)[:200]})"
        return timer


def _check_rounds(rounds: int, warmup: int) -> None:
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")


def time_fn(
    fn: Callable[[], object], device: torch.device | str, *, rounds: int = 20, warmup: int = 3,
    flush_l2: bool = True, graph: bool = True,
) -> Samples:
    """Median-ready samples of `fn`: `warmup` untimed rounds, then `rounds` timed ones."""
    _check_rounds(rounds, warmup)
    timer = make_timer(fn, device, graph=graph, flush_l2=flush_l2)
    for _ in range(warmup + rounds):
        timer.round()
    return timer.samples(skip=warmup)


def time_interleaved(
    fns: Mapping[str, Callable[[], object]], device: torch.device | str, *, rounds: int = 20, warmup: int = 3,
    flush_l2: bool = True, graph: bool = True,
) -> dict[str, Samples]:
    """Time several callables round-robin, so that a drift of clock speed or of background load over the run
    hits them alike and their ratio stays fair; the order flips every round (A B, B A, A B ...), so that no
    callable always runs first or always right after another. Returns the samples by name."""
    _check_rounds(rounds, warmup)
    pool = shared_pool(device)
    timers = {name: make_timer(fn, device, graph=graph, flush_l2=flush_l2, pool=pool) for name, fn in fns.items()}
    order = list(timers.values())
    for i in range(warmup + rounds):
        for timer in order if i % 2 == 0 else reversed(order):
            timer.round()
    return {name: timer.samples(skip=warmup) for name, timer in timers.items()}


def paired_ratio(numerator: Samples, denominator: Samples) -> float:
    """Median over rounds of numerator_i / denominator_i, for samples timed interleaved round by round (a
    speedup when the numerator is the baseline). Each ratio compares two calls made moments apart, so a drift of
    clock or load cancels out, and the median drops rounds that another process interrupted."""
    if numerator.rounds != denominator.rounds:
        raise ValueError(f"paired samples need equal rounds, got {numerator.rounds} and {denominator.rounds}")
    return statistics.median(n / d for n, d in zip(numerator.seconds, denominator.seconds))
