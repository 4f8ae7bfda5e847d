import dataclasses
from pathlib import Path

import pytest

from perfmamba.bench.cases import GRIDS, Case
from perfmamba.bench.suite import DEFER_VAR, CaseResult, check_result, thresholds_over_processes
from perfmamba.bench.thresholds import (
    ThresholdError,
    ThresholdsFileError,
    assert_kernel_error,
    assert_plugin_slowdown,
    assert_rule,
    device_class,
    load_thresholds,
    parse_thresholds,
)
from perfmamba.timing import Samples

BASE = {"kernel_max_rel_error": 1e-4, "plugin_max_slowdown": 1.25}
PRUNED_OP = Case("mamba1-tiny", "op", "prefill", 256, 8, 0.5)


@pytest.mark.parametrize("cls", ["cpu", "h100", "h200"])
def test_packaged_file_loads_for_every_device_class(cls):
    t = load_thresholds(cls)
    assert t.device_class == cls and 0 < t.kernel_max_rel_error < 1e-2 and t.plugin_max_slowdown > 1


def test_cpu_thresholds_are_live_on_the_quick_grid():
    """The CI subset must assert something: speedups at every level and the decode cache of both versions."""
    t = load_thresholds("cpu")
    cases = GRIDS["quick"].cases()
    speedup = {(c.version, c.level, c.mode) for c in cases if t.rule("speedup", c)}
    assert {(1, "op", "prefill"), (2, "op", "decode"), (1, "block", "prefill"), (1, "model", "prefill")} <= speedup
    assert all(t.rule("cache", c) for c in cases if c.pruned and c.mode == "decode" and c.level != "op")
    assert all(t.rule("perplexity", c) for c in GRIDS["quick"].quality_cases() if c.pruned)


@pytest.mark.parametrize("cls", ["h100", "h200"])
def test_gpu_thresholds_are_live_on_the_gpu_grid(cls):
    t = load_thresholds(cls)
    cases = GRIDS["gpu"].cases()
    assert any(t.rule("speedup", c) for c in cases)
    for kind in ("memory", "cache"):
        assert {c.version for c in cases if t.rule(kind, c) and c.level == "model"} == {1, 2}
    assert all(t.rule("perplexity", c) for c in GRIDS["gpu"].quality_cases() if c.pruned)


def test_device_class_override(monkeypatch):
    monkeypatch.setenv("PERFMAMBA_DEVICE_CLASS", "h100")
    assert device_class() == "h100" and load_thresholds().device_class == "h100"
    monkeypatch.delenv("PERFMAMBA_DEVICE_CLASS")
    import torch

    if not torch.cuda.is_available():
        assert device_class() == "cpu"


def test_gate_processes_per_device_class():
    # 6 a side on the GPUs (what caught every 4-6% op slowdown on the H200), 3 on the CPU (the default).
    assert [load_thresholds(c).gate.processes for c in ("cpu", "h100", "h200")] == [3, 6, 6]
    assert parse_thresholds({"cpu": {**BASE, "gate": {"processes": 4}}}, "cpu").gate.processes == 4


def test_cross_device_spread_reaches_the_gate_config_and_is_absent_by_default():
    from perfmamba.gate.run import GateOptions, gate_config

    assert load_thresholds("h200").gate.cross_device_spread is None  # not measured: never across GPUs
    t = parse_thresholds({"cpu": {**BASE, "gate": {"cross_device_spread": 0.004}}}, "cpu")
    assert t.gate.cross_device_spread == 0.004
    with pytest.raises(ValueError, match="cross_device_spread"):
        parse_thresholds({"cpu": {**BASE, "gate": {"cross_device_spread": -1}}}, "cpu")
    assert gate_config(GateOptions(base="a", pr="b", out=Path("o"))).cross_device_spread is None


def test_unknown_device_class_lists_the_known_ones():
    with pytest.raises(ThresholdsFileError, match=r"no thresholds for device class 'a100'; it has: cpu, h100, h200"):
        load_thresholds("a100")


@pytest.mark.parametrize("doc, message", [
    ({"cpu": {**BASE, "kernel_max_error": 1}}, r"\[cpu\]: unknown key 'kernel_max_error'"),
    ({"cpu": {"plugin_max_slowdown": 1.2}}, "missing 'kernel_max_rel_error'"),
    ({"cpu": {**BASE, "speedup": [{"ratio": 0.5, "minimum": 1.1}]}}, r"#1: unknown key 'minimum'"),
    ({"cpu": {**BASE, "speedup": [{"ratio": 0.5}]}}, "missing 'min'"),
    ({"cpu": {**BASE, "perplexity": [{"ratio": 0.5, "min": 0.1}]}}, "unknown key 'min'"),
    ({"cpu": {**BASE, "speedup": [{"ratio": 1.5, "min": 1.1}]}}, r"ratio must be in \(0, 1\), got 1.5"),
    ({"cpu": {**BASE, "speedup": [{"level": "layer", "min": 1.1}]}}, "level must be one of"),
    ({"cpu": {**BASE, "speedup": [{"version": 3, "min": 1.1}]}}, "version must be 1 or 2, got 3"),
    ({"cpu": {**BASE, "speedup": [{"seqlen": 2.5, "min": 1.1}]}}, r"seqlen must be an integer >= 1, got 2\.5"),
    ({"cpu": {**BASE, "speedup": [{"min": "fast"}]}}, "expected a finite number, got 'fast'"),
    ({"cpu": {**BASE, "speedup": {"min": 1.1}}}, r"write rules as \[\[cpu.speedup\]\] tables"),
    ({"cpu": {**BASE, "cache": [{"ratio": 0.5, "min": 0.3}, {"ratio": 0.5, "min": 0.4}]}}, "same conditions as"),
    ({"cpu": {**BASE}, "gpu": {"kernel_max_rel_error": 1e-3}}, r"\[gpu\]: missing 'plugin_max_slowdown'"),
    ({"cpu": {**BASE, "gate": {"processes": 0}}}, r"\[cpu.gate\] processes: expected an integer >= 1, got 0"),
    ({"cpu": {**BASE, "gate": {"processes": 2.5}}}, r"processes: expected an integer >= 1, got 2\.5"),
])
def test_malformed_thresholds_are_rejected(doc, message):
    # Every section is validated, not just the one in use: a typo must fail on any machine.
    with pytest.raises(ThresholdsFileError, match=message):
        parse_thresholds(doc, "cpu")


def test_junk_files_are_rejected(tmp_path):
    junk = tmp_path / "t.toml"
    junk.write_text("[cpu\nkernel_max_rel_error = ")
    with pytest.raises(ThresholdsFileError, match="not valid TOML"):
        load_thresholds("cpu", junk)
    with pytest.raises(ThresholdsFileError, match="no such thresholds file"):
        load_thresholds("cpu", tmp_path / "missing.toml")


def test_most_specific_rule_wins():
    t = parse_thresholds({"cpu": {**BASE, "speedup": [
        {"ratio": 0.5, "min": 1.05},
        {"ratio": 0.5, "version": 1, "level": "op", "min": 1.2},
        {"ratio": 0.9, "min": 2.0},
        {"ratio": 0.5, "version": 1, "level": "op", "seqlen": 256, "min": 1.25},
    ]}}, "cpu")
    assert t.rule("speedup", PRUNED_OP).bound == 1.25
    assert t.rule("speedup", Case("mamba1-tiny", "op", "prefill", 512, 8, 0.5)).bound == 1.2
    assert t.rule("speedup", Case("mamba2-tiny", "op", ratio=0.5)).bound == 1.05
    assert t.rule("speedup", PRUNED_OP.dense()) is None
    assert t.rule("memory", PRUNED_OP) is None
    with pytest.raises(ValueError, match="unknown threshold kind 'latency'"):
        t.rule("latency", PRUNED_OP)


def test_failure_messages_hold_the_measurement_and_the_threshold():
    t = parse_thresholds({"cpu": {**BASE, "speedup": [{"ratio": 0.5, "min": 1.2}],
                                  "perplexity": [{"ratio": 0.5, "max": 0.1}]}}, "cpu")
    assert assert_rule(t, "speedup", PRUNED_OP, 1.3).bound == 1.2
    with pytest.raises(ThresholdError, match=r"speedup .* 1\.01 is below the minimum threshold 1\.2 .*#1"):
        assert_rule(t, "speedup", PRUNED_OP, 1.01)
    with pytest.raises(ThresholdError, match=r"perplexity .* 0\.3 is above the maximum threshold 0\.1"):
        assert_rule(t, "perplexity", PRUNED_OP, 0.3)
    with pytest.raises(ThresholdError, match="speedup"):
        assert_rule(t, "speedup", PRUNED_OP, float("nan"))  # a broken measurement is no pass
    with pytest.raises(ThresholdError, match=r"relative error vs the reference 0\.03 is above .* 0\.0001"):
        assert_kernel_error(t, "ssd_scan", "plugin:x", 0.03, "case")
    with pytest.raises(ThresholdError, match=r"slowdown vs the built-in backend 3 is above .* 1\.25"):
        assert_plugin_slowdown(t, "ssd_scan", "plugin:x", 3.0, "case")
    assert_kernel_error(t, "ssd_scan", "plugin:x", 1e-6, "case")


def _runs(case: Case, speedups: list[float]) -> list[dict]:
    """One benchmark file per process, as the suite's recorder writes them."""
    return [{"benchmarks": [{"name": f"test_op[{case.id}]", "params": dataclasses.asdict(case),
                             "extra_info": {"speedup": s}}]} for s in speedups]


def test_the_gate_judges_a_ratio_on_its_median_over_processes():
    """One process is one draw: on a CPU one process's Mamba-1 prefill speedup once fell far below the others'
    (1.05 against 1.25-1.45), and a draw below the bound alone must not block a PR."""
    case = Case("mamba1-tiny", "op", "prefill", 256, 8, 0.5, "contribution", "fp32")
    cpu = load_thresholds("cpu")
    bound = cpu.rule("speedup", case).bound
    low, lower = round(bound - 0.03, 2), round(bound - 0.04, 2)
    assert thresholds_over_processes(_runs(case, [low, 1.28, 1.31]), cpu) == []
    (failure,) = thresholds_over_processes(_runs(case, [low, lower, 1.28]), cpu)
    assert f"below the minimum threshold {bound:g}" in failure
    assert f"median of 3 processes: {low:.2f}, {lower:.2f}, 1.28" in failure
    dense = Case("mamba1-tiny", "op", "prefill", 256, 8, 0.0, "none", "fp32")
    assert thresholds_over_processes(_runs(dense, [0.5, 0.5]), cpu) == []  # no rule: nothing to judge


def test_in_the_gates_processes_the_ratios_are_recorded_not_asserted(monkeypatch):
    case = Case("mamba1-tiny", "op", "prefill", 256, 8, 0.5, "contribution", "fp32")
    result = CaseResult(case, Samples((1.0,), "perf_counter"), extra_info={"speedup": 1.0})
    with pytest.raises(ThresholdError, match="below the minimum"):
        check_result(result, load_thresholds("cpu"))
    monkeypatch.setenv(DEFER_VAR, "1")
    assert check_result(result, load_thresholds("cpu")) == ["speedup"]
