import time

import pytest
import torch

from perfmamba.bench.cases import Case
from perfmamba.bench.harness import Recorder, measure, worker_gpu_index
from perfmamba.bench.timing import RoundTimer, Samples, time_fn, time_interleaved


def sleeper(seconds, log=None, name=None):
    def fn():
        if log is not None:
            log.append(name)
        time.sleep(seconds)

    return fn


def test_time_fn_drops_warmup_and_measures_each_call():
    calls = []
    samples = time_fn(sleeper(0.004, calls, "x"), "cpu", rounds=5, warmup=2)
    assert len(calls) == 7 and samples.rounds == 5 and samples.clock == "perf_counter"
    assert 0.004 <= samples.median < 0.04 and samples.min <= samples.median


def test_interleaved_timing_alternates_and_separates():
    log = []
    s = time_interleaved({"slow": sleeper(0.006, log, "slow"), "fast": sleeper(0.002, log, "fast")}, "cpu",
                         rounds=4, warmup=1)
    assert log == ["slow", "fast"] * 5
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


class FakeBenchmark:
    """pytest-benchmark's fixture as `measure` uses it: pedantic(target, setup, rounds, warmup_rounds)."""

    def __init__(self, disabled=False):
        self.disabled, self.calls, self.extra_info = disabled, [], {}

    def pedantic(self, target, setup, rounds, warmup_rounds, iterations):
        assert iterations == 1
        for _ in range(warmup_rounds + rounds):
            setup()
            t0 = time.perf_counter()
            target()
            self.calls.append(time.perf_counter() - t0)


@pytest.mark.parametrize("disabled", [False, True])
def test_measure_times_the_same_rounds_as_pytest_benchmark(disabled):
    log = []
    bench = FakeBenchmark(disabled)
    subject, baselines = measure(bench, sleeper(0.002, log, "pruned"), torch.device("cpu"), rounds=3, warmup=1,
                                 baselines={"dense": sleeper(0.004, log, "dense")})
    # baselines run in the untimed setup of each round, interleaved with the subject
    assert log == ["dense", "pruned"] * 4
    assert subject.rounds == baselines["dense"].rounds == 3
    assert len(bench.calls) == (0 if disabled else 4)
    assert baselines["dense"].median > subject.median


def test_recorder_writes_pytest_benchmark_layout():
    rec = Recorder()
    case = Case("mamba1-tiny", "op", "prefill", 256, 8, 0.5)
    rec.add("test_op[x]", "benchmarks/test_bench_op.py::test_op[x]", case, Samples((0.1, 0.3, 0.2), "perf_counter"),
            {"speedup": 1.3})
    bench = rec.payload()["benchmarks"][0]
    assert bench["stats"]["median"] == 0.2 and bench["stats"]["data"] == [0.1, 0.3, 0.2]
    assert bench["stats"]["rounds"] == 3 and bench["group"] == "op-prefill" and bench["case"] == case.id
    assert bench["extra_info"] == {"clock": "perf_counter", "speedup": 1.3}
    assert bench["params"]["ratio"] == 0.5


@pytest.mark.parametrize("worker, count, index", [(None, 4, None), ("gw0", 4, 0), ("gw3", 4, 3), ("gw5", 4, 1),
                                                  ("gw2", 0, None)])
def test_one_gpu_per_xdist_worker(worker, count, index):
    assert worker_gpu_index(worker, count) == index


def test_bad_worker_id():
    with pytest.raises(ValueError, match="unexpected pytest-xdist worker id 'master'"):
        worker_gpu_index("master", 2)


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
    from perfmamba.bench import timing

    timing._flush_buffer.cache_clear()
    a = torch.randn(256, 256, device="cuda")
    with torch.inference_mode():
        RoundTimer(lambda: a @ a, "cuda").round()
    timer = RoundTimer(lambda: a @ a, "cuda")  # the same flush buffer, now outside inference mode
    timer.round()
    assert timer.samples().rounds == 1
