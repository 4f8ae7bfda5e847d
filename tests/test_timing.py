"""perfmamba.timing: samples and their statistics, CPU timing, and on a GPU the CUDA-graph timer (device time,
the L2 state, the eager fallback for calls that cannot be captured)."""


import platform
import subprocess
import sys

import pytest
import torch
from sleepers import sleeper

from perfmamba import timing
from perfmamba.timing import GraphTimer, RoundTimer, Samples, make_timer, time_fn, time_interleaved

# The GPU tests here assert on timings: under pytest-xdist they wait for the GPU to themselves (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("exclusive_gpu")


def test_time_fn_drops_warmup_and_measures_each_call():
    calls = []
    samples = time_fn(sleeper(0.004, calls, "x"), "cpu", rounds=5, warmup=2)
    assert len(calls) == 7 and samples.rounds == 5 and samples.clock == "perf_counter"
    assert 0.004 <= samples.median < 0.04 and samples.min <= samples.median


def test_interleaved_timing_alternates_flips_the_order_and_separates():
    log = []
    s = time_interleaved({"slow": sleeper(0.006, log, "slow"), "fast": sleeper(0.002, log, "fast")}, "cpu",
                         rounds=4, warmup=1)
    assert log == ["slow", "fast", "fast", "slow"] * 2 + ["slow", "fast"]
    assert s["slow"].median / s["fast"].median > 1.5


def test_samples_statistics():
    s = Samples((1.0, 2.0, 3.0, 4.0, 100.0), "perf_counter")
    assert s.median == 3.0 and s.min == 1.0 and s.iqr == 2.0 and s.rounds == 5
    assert s.summary()["median_s"] == 3.0
    with pytest.raises(ValueError, match="at least one"):
        Samples((), "perf_counter")
    with pytest.raises(ValueError, match="clock must be one of"):
        Samples((1.0,), "wall")
    with pytest.raises(ValueError, match="rounds >= 1"):
        time_fn(lambda: None, "cpu", rounds=0)


def test_samples_declare_clock_l2_and_host_timing():
    s = Samples((2e-3, 2e-3), "cuda_graph", "flushed", calls=4, eager_s=5e-3)
    assert not s.host_timed and s.eager_over_graph == pytest.approx(2.5)
    assert Samples((1.0,), "cuda_event", "warm").host_timed
    summary = s.summary()
    assert (summary["clock"], summary["l2"], summary["graph_calls"], summary["host_timed"]) == \
        ("cuda_graph", "flushed", 4, False)
    with pytest.raises(ValueError, match="l2 must be one of"):
        Samples((1.0,), "perf_counter", "hot")


def test_cpu_timers_are_perf_counter_whatever_graph_says():
    timer = make_timer(lambda: None, "cpu", graph=True)
    assert isinstance(timer, RoundTimer) and timer.clock == "perf_counter" and timer.fallback_reason is None
    with pytest.raises(ValueError, match="needs a CUDA device"):
        GraphTimer(lambda: None, "cpu")


@pytest.mark.gpu
def test_cuda_event_timing_waits_for_the_gpu():
    a = torch.randn(4096, 4096, device="cuda")
    timer = RoundTimer(lambda: a @ a, "cuda")
    for _ in range(4):
        timer.round()
    s = timer.samples(skip=1)
    assert s.clock == "cuda_event" and s.rounds == 3
    # a 4096^3 matmul is ~0.14 TFLOP: well over 10 us on any GPU; a launch-only timing would be ~10 us
    assert s.median > 2e-5


@pytest.mark.gpu
def test_l2_flush_works_outside_inference_mode_after_a_timer_made_inside_it():
    from perfmamba import timing

    timing._flush_buffer.cache_clear()
    a = torch.randn(256, 256, device="cuda")
    with torch.inference_mode():
        RoundTimer(lambda: a @ a, "cuda").round()
    timer = RoundTimer(lambda: a @ a, "cuda")  # the same flush buffer, now outside inference mode
    timer.round()
    assert timer.samples().rounds == 1


@pytest.mark.gpu
def test_graph_timer_measures_device_time_of_a_gpu_bound_call():
    a = torch.randn(4096, 4096, device="cuda")
    s = time_fn(lambda: a @ a, "cuda", rounds=10, warmup=1)
    eager = time_fn(lambda: a @ a, "cuda", rounds=10, warmup=1, graph=False)
    assert s.clock == "cuda_graph" and s.l2 == "flushed" and s.calls >= 1 and not s.host_timed
    assert eager.clock == "cuda_event" and eager.host_timed
    # one big matmul is GPU-bound: graph and eager agree, and eager / graph is near 1
    assert s.median == pytest.approx(eager.median, rel=0.15)
    assert 0.8 < s.eager_over_graph < 1.25


@pytest.mark.gpu
def test_graph_timer_removes_the_launch_path_of_a_launch_bound_call():
    x = torch.randn(256, device="cuda")

    def many_small_kernels():
        y = x
        for _ in range(100):
            y = y + 1.0
        return y

    s = time_fn(many_small_kernels, "cuda", rounds=10, warmup=1, flush_l2=False)
    eager = time_fn(many_small_kernels, "cuda", rounds=10, warmup=1, flush_l2=False, graph=False)
    assert s.clock == "cuda_graph" and s.l2 == "warm" and s.calls > 1  # ~1 ms a replay needs several calls
    assert eager.median > 2 * s.median and s.eager_over_graph > 2


@pytest.mark.gpu
def test_graph_timer_subtracts_its_l2_flushes():
    x = torch.randn(1 << 20, device="cuda")  # 4 MiB: lives in L2 when warm
    flushed = time_fn(lambda: x.sum(), "cuda", rounds=15, warmup=2)
    warm = time_fn(lambda: x.sum(), "cuda", rounds=15, warmup=2, flush_l2=False)
    assert flushed.l2 == "flushed" and warm.l2 == "warm"
    # the flush itself (a read of 2x the L2, ~30 us) is not in the number, but its effect is: a cold read of
    # 4 MiB is no faster than a warm one, and far below a flush's own time
    assert warm.median * 0.9 < flushed.median < 20e-6 + 2 * warm.median


@pytest.mark.gpu
def test_uncapturable_calls_fall_back_to_host_timed_events():
    x = torch.randn(1024, device="cuda")
    timer = make_timer(lambda: x.sum().item(), "cuda")  # a host sync cannot be captured
    assert isinstance(timer, RoundTimer) and "not capturable in a CUDA graph" in timer.fallback_reason
    timer.round()
    s = timer.samples()
    assert s.host_timed and s.clock == "cuda_event" and s.note == timer.fallback_reason


@pytest.mark.gpu
def test_graph_timer_replays_in_place_updates_like_a_decode_step():
    state = torch.zeros(64, 1024, device="cuda")
    x = torch.ones(64, 1024, device="cuda")
    timer = GraphTimer(lambda: state.mul_(0.5).add_(x), "cuda", flush_l2=False, calls=3)
    before = state.clone()
    timer.round()
    assert timer.samples().rounds == 1 and not torch.equal(state, before)  # the replay ran the updates
    assert torch.allclose(state, torch.full_like(state, 2.0), atol=0.3)  # converging to x / (1 - 0.5)


@pytest.mark.gpu
def test_interleaved_callables_run_on_the_same_activation_addresses():
    # Each graph in its own pool put a placement bias of ~1.5% into the ratio of two identical model prefills.
    captured: dict[str, int] = {}

    def allocating(name: str):
        def fn():
            y = torch.empty(1 << 22, device="cuda").fill_(1.0)
            if torch.cuda.is_current_stream_capturing():
                captured[name] = y.data_ptr()
        return fn

    time_interleaved({"a": allocating("a"), "b": allocating("b")}, "cuda", rounds=2, warmup=0, flush_l2=False)
    assert captured["a"] == captured["b"]
    captured.clear()
    a, b = (GraphTimer(allocating(n), "cuda", flush_l2=False, calls=1) for n in "ab")  # separate pools: apart
    assert captured["a"] != captured["b"]


# Run in a fresh process: how many mmapped blocks an 8 MiB CPU tensor adds (glibc >= 2.33's mallinfo2), with or
# without the benchmark processes' allocator settings.
MMAP_PROBE = """
import ctypes, sys
import torch
from perfmamba import timing
if sys.argv[1] == "configured":
    assert timing.heap_allocations()
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]
info = ctypes.CDLL("libc.so.6").mallinfo2
info.restype = Info
before = info().hblks
x = torch.empty(2 << 20)
print(info().hblks - before)
"""


def _glibc_version() -> tuple[int, ...]:
    name, version = platform.libc_ver()
    return tuple(int(v) for v in version.split(".")[:2]) if name == "glibc" and version else ()


@pytest.mark.skipif(_glibc_version() < (2, 33), reason="glibc >= 2.33 (mallopt, mallinfo2)")
def test_benchmark_processes_take_large_allocations_from_the_heap():
    """By default glibc serves an 8 MiB allocation from a fresh mmap (one more mmapped block); in a benchmark
    process it comes from the heap. And `configure_process` applies the setting."""
    def mmapped_blocks(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", MMAP_PROBE, mode], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        return int(run.stdout.split()[-1])

    assert mmapped_blocks("default") == 1
    assert mmapped_blocks("configured") == 0
    was = timing.subnormals_flushed()
    timing.heap_allocations.cache_clear()
    try:
        timing.configure_process()
        assert timing.heap_allocations.cache_info().misses == 1  # configure_process made the call
    finally:
        torch.set_flush_denormal(was)
