"""Timings from two GPUs of one host are not interchangeable (issue #19): results name their GPU, and the gate
compares a benchmark timed on different GPUs only where their measured spread is within its threshold."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from gate_synthetic import draw, measurement

from perfmamba.gate import GateConfig, compare, load_results
from perfmamba.gate.comparison import EXIT_NOTHING_JUDGED, EXIT_PASSED
from perfmamba.gate.runs import merge_runs
from perfmamba.results import write_json

GPU0, GPU1 = "GPU-0a1b", "GPU-9f8e"


def _pair(base_device, new_device, factor=1.0, seed=0):
    rng = np.random.default_rng(seed)
    b = dataclasses.replace(measurement("model/fwd", draw(rng, 30, 0.002, "lognormal")), device=base_device)
    n = dataclasses.replace(measurement("model/fwd", draw(rng, 30, 0.002, "lognormal", factor)), device=new_device)
    return {"model/fwd": b}, {"model/fwd": n}


def test_a_benchmark_timed_on_two_gpus_of_unknown_spread_is_not_compared():
    base, new = _pair(GPU0, GPU1)
    c = compare(base, new, GateConfig(default_threshold=0.02))
    assert not c.rows and c.exit_code() == EXIT_NOTHING_JUDGED
    assert c.skipped == (("model/fwd", f"timed on GPU {GPU0} in BASE and {GPU1} in NEW; the spread between them is "
                                       "not measured (cross_device_spread)"),)


@pytest.mark.parametrize(("spread", "judged"), [(0.005, True), (0.02, True), (0.03, False)])
def test_a_measured_spread_within_the_threshold_lets_two_gpus_be_compared(spread, judged):
    base, new = _pair(GPU0, GPU1)
    c = compare(base, new, GateConfig(default_threshold=0.02, cross_device_spread=spread))
    assert bool(c.rows) is judged
    if judged:
        assert c.rows[0].verdict == "unchanged" and c.exit_code() == EXIT_PASSED
    else:
        assert "their spread 3.0% exceeds the threshold 2.0%" in c.skipped[0][1]


@pytest.mark.parametrize(("base_device", "new_device"), [(GPU0, GPU0), (None, GPU1), (GPU0, None), (None, None)])
def test_the_same_gpu_or_an_unnamed_one_is_compared(base_device, new_device):
    # results older than the GPU's name in them (or from a CPU) are judged as before
    base, new = _pair(base_device, new_device, factor=1.10)
    c = compare(base, new, GateConfig(default_threshold=0.02))
    assert [r.verdict for r in c.rows] == ["regressed"]


def test_runs_of_one_side_on_several_gpus_name_them_all():
    rng = np.random.default_rng(1)
    runs = [{"a": dataclasses.replace(measurement("a", draw(rng, 5, 0.01, "lognormal")), device=d)}
            for d in (GPU1, GPU0, GPU1)]
    assert merge_runs(runs)["a"].device == f"{GPU0}+{GPU1}"
    assert merge_runs(runs[:1])["a"].device == GPU1
    # a side spread over both GPUs is not the other side's one GPU
    c = compare(merge_runs(runs), {"a": runs[0]["a"]}, GateConfig(default_threshold=0.5))
    assert not c.rows and c.skipped[0][0] == "a"


def test_readers_take_the_gpu_from_each_entry_or_the_files_environment(tmp_path):
    pytest_benchmark = {"benchmarks": [
        {"fullname": "t[a]", "stats": {"median": 1.0}, "extra_info": {"samples_s": [1.0, 1.1], "gpu_uuid": GPU1}},
        {"fullname": "t[b]", "stats": {"median": 1.0}, "extra_info": {"samples_s": [1.0, 1.1], "device": "cuda"}},
    ]}
    path = tmp_path / "pb.json"
    path.write_text(json.dumps(pytest_benchmark))
    read = load_results(path)
    assert (read["t[a]"].device, read["t[b]"].device) == (GPU1, None)

    profile = write_json(tmp_path / "p.json", {
        "environment": {"gpu_uuid": GPU0},
        "benchmarks": [{"name": "profile/x/total", "samples": [1e-3, 1.1e-3], "unit": "s"}],
    }, kind="profile")
    assert load_results(profile)["profile/x/total"].device == GPU0


def test_cross_device_spread_is_a_relative_change():
    with pytest.raises(ValueError, match="cross_device_spread must be in"):
        GateConfig(cross_device_spread=-0.1)
