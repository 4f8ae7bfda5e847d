"""Timing one call correctly on a CPU and on a CUDA device, returning the raw samples.

On CUDA a kernel launch returns before the GPU finishes, so host clocks measure launches unless the GPU is
drained. Each round here: (1) outside the timed region, flush the L2 cache by writing a buffer twice its size
(else a small op re-reads its inputs from L2 and looks faster than in a model) and synchronize, so the round
starts on an idle GPU; (2) record a CUDA event, run the call, record a second event and wait for it. The
sample is the events' elapsed time: GPU time of the call, launch gaps included, sync latency excluded. This is
what Triton's `do_bench` does, one call per sample so that medians and spreads are per call.

On a CPU a sample is `time.perf_counter()` around the call; there is no cache flush (the inputs of a benchmark
step are re-read from DRAM-sized buffers anyway, and flushing a CPU cache from Python is not reliable).

`RoundTimer` splits a round into `prepare()` (untimed) and `__call__()` (timed) so that pytest-benchmark's
`benchmark.pedantic(timer, setup=timer.prepare, ...)` measures the same rounds that the samples come from;
`time_fn` and `time_interleaved` are the plain loops used by asv and scripts.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch

CLOCKS = ("cuda_event", "perf_counter")
# torch's own default, before configure_process pins the benchmark processes to fewer threads.
DEFAULT_CPU_THREADS = torch.get_num_threads()


@dataclass(frozen=True)
class Samples:
    """Seconds per call, one per measured round (warm-up rounds excluded)."""

    seconds: tuple[float, ...]
    clock: str  # "cuda_event" or "perf_counter"

    def __post_init__(self) -> None:
        if not self.seconds:
            raise ValueError("Samples needs at least one measured round")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {self.clock!r}")

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

    def summary(self) -> dict[str, float | int | str]:
        return {"median_s": self.median, "mean_s": self.mean, "min_s": self.min, "iqr_s": self.iqr,
                "rounds": self.rounds, "clock": self.clock}


def configure_process(cpu_threads: int | None = None) -> None:
    """Process settings every benchmark runs under. Subnormal floats are flushed to zero: the reference scans'
    decaying states underflow into subnormals, which x86 cores handle ~100x slower (a 10x slower block on the
    tiny presets), while the CUDA kernels are built with fast math, which flushes them too. `cpu_threads` pins
    torch's intra-op threads (None: leave torch's default)."""
    torch.set_flush_denormal(True)
    if cpu_threads is not None:
        torch.set_num_threads(cpu_threads)


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


def l2_cache_bytes(device: torch.device) -> int:
    """The L2 size of a CUDA device (50 MB on an H100, 60 MB on an H200); 0 elsewhere."""
    if device.type != "cuda":
        return 0
    props = torch.cuda.get_device_properties(device)
    # Older torch builds lack the attribute; 64 MiB covers every current data-centre GPU.
    return int(getattr(props, "L2_cache_size", 0) or 64 * 2**20)


@functools.cache
def _flush_buffer(device: torch.device) -> torch.Tensor:
    # One buffer per device, shared by every timer: twice the L2, so writing it evicts everything cached before.
    # Never an inference tensor, though the first timer may be made under torch.inference_mode(): one of those
    # could not be zeroed by a timer running outside it.
    with torch.inference_mode(False):
        return torch.empty(2 * l2_cache_bytes(device) // 4, dtype=torch.int32, device=device)


class RoundTimer:
    """Times `fn` once per call on `device`; `prepare()` readies the next round outside the timed region."""

    def __init__(self, fn: Callable[[], object], device: torch.device | str, *, flush_l2: bool = True) -> None:
        self.fn = fn
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._flush = _flush_buffer(self.device) if self.cuda and flush_l2 else None
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._host: list[float] = []

    @property
    def clock(self) -> str:
        return "cuda_event" if self.cuda else "perf_counter"

    def prepare(self) -> None:
        if self.cuda:
            if self._flush is not None:
                self._flush.zero_()
            torch.cuda.synchronize(self.device)

    def __call__(self) -> None:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
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
        return Samples(tuple(seconds[skip:]), self.clock)

    def round(self) -> None:
        self.prepare()
        self()


def time_fn(
    fn: Callable[[], object], device: torch.device | str, *, rounds: int = 20, warmup: int = 3,
    flush_l2: bool = True,
) -> Samples:
    """Median-ready samples of `fn`: `warmup` untimed rounds, then `rounds` timed ones."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")
    timer = RoundTimer(fn, device, flush_l2=flush_l2)
    for _ in range(warmup + rounds):
        timer.round()
    return timer.samples(skip=warmup)


def time_interleaved(
    fns: Mapping[str, Callable[[], object]], device: torch.device | str, *, rounds: int = 20, warmup: int = 3,
    flush_l2: bool = True,
) -> dict[str, Samples]:
    """Time several callables round-robin (A B A B ...), so that a drift of clock speed or of background load
    over the run hits them alike and their ratio stays fair. Returns the samples by name."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")
    timers = {name: RoundTimer(fn, device, flush_l2=flush_l2) for name, fn in fns.items()}
    for _ in range(warmup + rounds):
        for timer in timers.values():
            timer.round()
    return {name: timer.samples(skip=warmup) for name, timer in timers.items()}


def paired_ratio(numerator: Samples, denominator: Samples) -> float:
    """Median over rounds of numerator_i / denominator_i, for samples timed interleaved round by round (a
    speedup when the numerator is the baseline). Each ratio compares two calls made moments apart, so a drift of
    clock or load cancels out, and the median drops rounds that another process interrupted: on a loaded 2-core
    machine this spread 0.98-1.01 over repeats where the ratio of medians spread 0.97-1.04."""
    if numerator.rounds != denominator.rounds:
        raise ValueError(f"paired samples need equal rounds, got {numerator.rounds} and {denominator.rounds}")
    return statistics.median(n / d for n, d in zip(numerator.seconds, denominator.seconds))
