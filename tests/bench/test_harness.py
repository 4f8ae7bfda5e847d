"""The bridge to pytest-benchmark: measure() times the rounds pytest-benchmark sees, Recorder writes its layout,
and xdist workers pin GPUs."""

import os
import time

import pytest
import torch
from sleepers import sleeper

from perfmamba.bench.cases import Case
from perfmamba.bench.harness import Recorder, case_group, measure, worker_gpu_index
from perfmamba.timing import Samples


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
    assert bench["extra_info"] == {"clock": "perf_counter", "l2": "none", "host_timed": False, "speedup": 1.3,
                                   "xdist_worker": os.environ.get("PYTEST_XDIST_WORKER")}
    assert bench["params"]["ratio"] == 0.5


@pytest.mark.parametrize("worker, count, index", [(None, 4, None), ("gw0", 4, 0), ("gw3", 4, 3), ("gw5", 4, 1),
                                                  ("gw2", 0, None)])
def test_one_gpu_per_xdist_worker(worker, count, index):
    assert worker_gpu_index(worker, count) == index


def test_bad_worker_id():
    with pytest.raises(ValueError, match="unexpected pytest-xdist worker id 'master'"):
        worker_gpu_index("master", 2)


def test_cases_name_the_gpu_they_run_on(monkeypatch):
    from perfmamba.bench import harness

    assert harness.gpu_fields(torch.device("cpu")) == {}
    monkeypatch.setattr(harness, "gpu_identity", lambda i: {"gpu": "H200", "gpu_index": i, "gpu_uuid": f"GPU-{i}"})
    assert harness.gpu_fields(torch.device("cuda", 1)) == {"gpu_uuid": "GPU-1", "gpu_index": 1}


@pytest.mark.parametrize("nodeid, group", [
    ("benchmarks/test_bench_op.py::test_op[mamba1-130m-op-prefill-L2048-b4-r0.5-contribution-bf16]",
     "mamba1-130m-bf16"),
    ("benchmarks/test_bench_model.py::test_model[mamba1-1.4b-model-decode-L512-b64-r0-none-bf16]", "mamba1-1.4b-bf16"),
    # xdist's own suffix (pytest < 9.2) is dropped, not taken for the group
    ("benchmarks/test_bench_op.py::test_op[mamba2-tiny-op-decode-L64-b64-r0-none-fp32]@mamba2-tiny-fp32",
     "mamba2-tiny-fp32"),
    ("benchmarks/test_bench_op.py::test_other", "benchmarks/test_bench_op.py::test_other"),
    ("benchmarks/test_bench_op.py::test_other@mine", "mine"),  # not a case: xdist's group stands
    ("benchmarks/test_x.py::test_x[a@b]", "benchmarks/test_x.py::test_x[a@b]"),  # an '@' inside the parameters
    ("benchmarks/test_x.py::test_x[unknown-preset-fp32]", "benchmarks/test_x.py::test_x[unknown-preset-fp32]"),
])
def test_a_case_is_grouped_by_its_preset_and_dtype(nodeid, group):
    assert case_group(nodeid, ["mamba1", "mamba1-130m", "mamba1-1.4b", "mamba2-tiny"]) == group
