"""The benchmark suite's own assertions must fail on bad kernels: a plugged-in kernel that is wrong (1% noise),
one whose cost ignores the state dimension (padded to a 64-wide tile, so pruning buys nothing), and one that is
3x slower than the kernel it replaces. And they must pass exact kernels of equal speed. (That the reference
kernels meet the speedup thresholds is what the benchmark suite itself asserts, on the machine kind the [cpu]
thresholds were measured on.)"""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from perfmamba import ops
from perfmamba.bench.cases import Case
from perfmamba.bench.suite import check_kernels, check_result, run_case
from perfmamba.bench.thresholds import ThresholdError, load_thresholds
from perfmamba.bench.workloads import ModelCache, kernel_error

PLUGINS = "perfmamba.bench.plugins"
M1_PREFILL = Case("mamba1-tiny", "op", "prefill", 256, 8, 0.5)
M2_PREFILL = Case("mamba2-tiny", "op", "prefill", 256, 8, 0.5)
M1_DECODE = Case("mamba1-tiny", "op", "decode", 64, 64, 0.5)
M2_DECODE = Case("mamba2-tiny", "op", "decode", 64, 64, 0.5)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def thresholds():
    return load_thresholds("cpu")


def timed(case, device, thresholds):
    result = run_case(case, device, models=ModelCache(), rounds=15, warmup=3)
    return result, check_result(result, thresholds)


@pytest.mark.parametrize("case, op", [
    (M1_PREFILL, "selective_scan"), (M2_PREFILL, "ssd_scan"), (M1_DECODE, "selective_state_update"),
    (M2_DECODE, "selective_state_update"), (M1_PREFILL, "causal_conv1d"), (M1_PREFILL, "rms_norm"),
])
def test_wrong_kernel_fails_the_error_threshold(case, op, thresholds, cpu_bench):
    with ops.use(op, f"{PLUGINS}:{op}_wrong"):
        check = kernel_error(op, case, cpu_bench)
        assert check.backend.startswith("plugin:") and 1e-3 < check.rel_error < 0.2
        with pytest.raises(ThresholdError, match=rf"{op} via backend 'plugin:.*relative error vs the reference "
                                                 rf"[0-9.e-]+ is above the maximum threshold 0\.0001"):
            check_kernels(case, cpu_bench, thresholds)


@pytest.mark.parametrize("case", [M1_PREFILL, M2_PREFILL, M1_DECODE, M2_DECODE], ids=lambda c: c.id)
def test_exact_plugins_pass_the_error_threshold(case, thresholds, cpu_bench):
    op = "selective_state_update" if case.mode == "decode" else ("selective_scan" if case.version == 1 else "ssd_scan")
    for variant in ("padded", "slow50"):
        with ops.use(op, f"{PLUGINS}:{op}_{variant}"):
            checks = check_kernels(case, cpu_bench, thresholds)
        assert checks[op]["backend"].startswith("plugin:") and checks[op]["rel_error"] < 1e-5


def test_padded_kernel_fails_the_speedup_threshold(thresholds, cpu_bench):
    bound = re.escape(f"{thresholds.rule('speedup', M1_PREFILL).bound:g}")
    with ops.use("selective_scan", f"{PLUGINS}:selective_scan_padded"):
        with pytest.raises(ThresholdError, match=rf"speedup .* is below the minimum threshold {bound}"):
            timed(M1_PREFILL, cpu_bench, thresholds)


def test_slow_kernel_fails_the_plugin_slowdown_threshold(thresholds, cpu_bench):
    case = M1_PREFILL.dense()
    with ops.use("selective_scan", f"{PLUGINS}:selective_scan_slow200"):
        with pytest.raises(ThresholdError, match=r"slowdown vs the built-in backend [0-9.]+ is above the maximum "
                                                 r"threshold 1\.25"):
            timed(case, cpu_bench, thresholds)


def test_reference_as_plugin_passes_the_slowdown_threshold(thresholds, cpu_bench):
    case = M1_PREFILL.dense()
    with ops.use("selective_scan", "perfmamba.ops:selective_scan_ref"):
        result, checked = timed(case, cpu_bench, thresholds)
    assert checked == ["plugin_slowdown"] and result.extra_info["builtin_backend"] == "reference"


def run_benchmarks(select: str, plugins: str, *options: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PERFMAMBA_OPS": plugins, "PERFMAMBA_GRID": "quick", "PERFMAMBA_DEVICE_CLASS": "cpu",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "pytest", str(REPO / "benchmarks" / "test_bench_op.py"), "-q",
               "-p", "no:cacheprovider", "-k", select, "--perfmamba-rounds", "10", *options]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_benchmark_suite_records_samples_for_the_gate(tmp_path):
    """pytest-benchmark's JSON and --perfmamba-json hold the same rounds: host times in stats.data, the
    samples the gate reads in extra_info.samples_s (CUDA events on a GPU), with the case's extra_info."""
    proc = run_benchmarks("mamba1-tiny and decode", "", "--benchmark-json", str(tmp_path / "pb.json"),
                          "--perfmamba-json", str(tmp_path / "pm.json"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    from perfmamba.results import read_json

    ours = read_json(tmp_path / "pm.json", kind="benchmark")
    theirs = read_json(tmp_path / "pb.json")
    assert ours["grid"] == "quick" and ours["environment"]["torch"]
    assert [b["fullname"] for b in ours["benchmarks"]] == sorted(b["fullname"] for b in theirs["benchmarks"])
    for b in theirs["benchmarks"]:
        info = b["extra_info"]
        assert len(info["samples_s"]) == len(b["stats"]["data"]) == b["stats"]["rounds"] == 10
        assert info["clock"] == "perf_counter" and info["backend"] == "reference" and info["state_bytes"] > 0
        if "-r0.5-" in b["name"]:
            assert info["speedup"] > 0 and info["dense_median_s"] > 0


@pytest.mark.parametrize("plugin, message", [
    ("ssd_scan_wrong", "ssd_scan via backend 'plugin:perfmamba.bench.plugins:ssd_scan_wrong': relative error"),
    ("selective_scan_padded", "speedup (median of dense_i / pruned_i"),
])
def test_benchmark_suite_fails_with_a_bad_plugin(plugin, message):
    """End to end through $PERFMAMBA_OPS, as a kernel developer (or the GPU CI) runs the suite."""
    op = plugin.rsplit("_", 1)[0]
    version = "mamba2" if op == "ssd_scan" else "mamba1"
    proc = run_benchmarks(f"{version}-tiny and prefill and r0.5", f"{op}={PLUGINS}:{plugin}", "--benchmark-disable")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert message in out and "ThresholdError" in out


@pytest.mark.parametrize("preset", ["mamba1-tiny", "mamba2-tiny"])
def test_perplexity_threshold_passes_calibrated_pruning_and_fails_random_states(preset, thresholds):
    """The shipped [cpu] perplexity bound holds for the grid's criterion and rejects the same number of states
    chosen at random (a pruning that ignores activity), on the trained tiny models."""
    import torch

    from perfmamba.bench.quality import QualityCache

    cache = QualityCache(torch.device("cpu"))
    case = Case(preset, "model", "prefill", 256, 1, 0.5, "contribution", "fp32")
    rule = thresholds.rule("perplexity", case)
    assert rule is not None
    dense = cache.perplexity(case.dense())
    assert cache.perplexity(case) / dense - 1 <= rule.bound
    random_states = dataclasses.replace(case, criterion="random")
    assert cache.perplexity(random_states) / dense - 1 > rule.bound
