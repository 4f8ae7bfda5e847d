"""One benchmark case end to end: check the kernels, time the case (interleaved with its baselines), measure its
memory, and check everything against the thresholds. The pytest-benchmark suite, the asv suite and the tests
of the suite call these, so the three cannot measure or judge differently.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch

from perfmamba.bench.cases import REFERENCE_LEVEL, Case
from perfmamba.bench.harness import gpu_fields, measure
from perfmamba.bench.thresholds import (
    ThresholdError,
    Thresholds,
    assert_kernel_error,
    assert_plugin_slowdown,
    assert_rule,
)
from perfmamba.bench.workloads import (
    ModelCache,
    Workload,
    checked_ops,
    kernel_error,
    make_workload,
    op_workload,
    peak_memory_bytes,
)
from perfmamba.ops.registry import unavailable_reason
from perfmamba.timing import Samples, paired_ratio


@dataclass
class CaseResult:
    case: Case
    samples: Samples
    baselines: dict[str, Samples] = field(default_factory=dict)
    extra_info: dict[str, Any] = field(default_factory=dict)


def builtin_backend(device: torch.device, op: str) -> str:
    """What "auto" runs without plug-ins: the CUDA kernel on a GPU where it is installed, else the reference."""
    return "cuda" if device.type == "cuda" and unavailable_reason(op, "cuda") is None else "reference"


def check_kernels(case: Case, device: torch.device, thresholds: Thresholds) -> dict[str, Any]:
    """Every op the case runs, through whatever "auto" resolves to, against its reference. Raises on the first
    op past `kernel_max_rel_error`; returns {op: {"backend", "rel_error"}} for extra_info."""
    out = {}
    for op in checked_ops(case):
        check = kernel_error(op, case, device)
        out[op] = {"backend": check.backend, "rel_error": check.rel_error}
        assert_kernel_error(thresholds, op, check.backend, check.rel_error, case.id)
    return out


def run_case(
    case: Case, device: torch.device, *, models: ModelCache, rounds: int, warmup: int, benchmark: Any | None = None,
    graph: bool = True,
) -> CaseResult:
    """Time `case` (on a GPU as CUDA-graph replays where `graph`); a pruned case is timed interleaved with its
    dense twin (speedup: `paired_ratio`), an op-level case whose op runs a plug-in interleaved with the
    built-in backend (plugin_slowdown), and a vs_mamba_ssm case interleaved with mamba-ssm's model holding the
    same weights (time_over_mamba_ssm; needs CUDA and mamba-ssm: `reference_model.unavailable_reason`). No
    thresholds are checked here (`check_result`)."""
    workload: Workload = make_workload(case, device, models)
    dense = make_workload(case.dense(), device, models) if case.pruned else None
    baselines = {}
    if dense is not None:
        baselines["dense"] = dense.fn
    builtin = None
    if case.level == "op":
        builtin = builtin_backend(device, workload.info["op"])
        if workload.info["backend"] != builtin:
            baselines["builtin"] = op_workload(case, device, backend=builtin).fn
    reference = None
    if case.level == REFERENCE_LEVEL:
        from perfmamba.bench.reference_model import ours_over_mamba_ssm, reference_workload

        reference = reference_workload(case, device, models)
        baselines["mamba_ssm"] = reference.fn
    samples, base = measure(benchmark, workload.fn, device, rounds=rounds, warmup=warmup, baselines=baselines,
                            graph=graph)
    extra: dict[str, Any] = {"case": case.id, "device": str(device), **gpu_fields(torch.device(device)),
                             **workload.info, **samples.summary()}
    extra["samples_s"] = list(samples.seconds)
    if "dense" in base:
        extra["dense_median_s"] = base["dense"].median
        extra["speedup"] = paired_ratio(base["dense"], samples)
    if "builtin" in base:
        extra["builtin_backend"] = builtin
        extra["builtin_median_s"] = base["builtin"].median
        extra["plugin_slowdown"] = paired_ratio(samples, base["builtin"])
    if reference is not None:
        theirs = base["mamba_ssm"]
        extra["time_over_mamba_ssm"] = ours_over_mamba_ssm(samples, theirs, case.id)
        extra["mamba_ssm_median_s"] = theirs.median
        extra["mamba_ssm_samples_s"] = list(theirs.seconds)
        extra.update({f"mamba_ssm_{k}": v for k, v in reference.info.items()})
    peak = peak_memory_bytes(workload)
    if peak is not None:
        extra["peak_memory_bytes"] = peak
        if dense is not None:
            dense_peak = peak_memory_bytes(dense)
            extra["dense_peak_memory_bytes"] = dense_peak
            extra["memory_reduction"] = 1.0 - peak / dense_peak
    if dense is not None and case.mode == "decode" and case.level != "op":
        dense_info = dense.info
        extra["dense_cache_bytes"] = dense_info["cache_bytes"]
        extra["cache_reduction"] = 1.0 - workload.info["cache_bytes"] / dense_info["cache_bytes"]
    return CaseResult(case, samples, base, extra)


# The measured ratios that thresholds.toml bounds, by the extra_info key that holds each.
RATIOS = (("speedup", "speedup"), ("memory", "memory_reduction"), ("cache", "cache_reduction"),
          ("vs_mamba_ssm", "time_over_mamba_ssm"))
# Set by `perfmamba gate` in its benchmark processes: one process is one draw of its ratios (on a CPU one process's
# Mamba-1 prefill speedup was 1.05 where the others' were 1.25-1.45), so the gate judges them over the processes
# (`thresholds_over_processes`) and a process does not fail on its own draw.
DEFER_VAR = "PERFMAMBA_DEFER_THRESHOLDS"


def check_result(result: CaseResult, thresholds: Thresholds) -> list[str]:
    """Assert every threshold that applies to `result` (the ratios only recorded when $PERFMAMBA_DEFER_THRESHOLDS
    is 1); returns the names of those that apply."""
    checked = []
    extra, case = result.extra_info, result.case
    deferred = os.environ.get(DEFER_VAR) == "1"
    for kind, key in RATIOS:
        if key in extra and thresholds.rule(kind, case) is not None:
            if not deferred:
                assert_rule(thresholds, kind, case, extra[key])
            checked.append(kind)
    if "plugin_slowdown" in extra:
        assert_plugin_slowdown(thresholds, extra["op"], extra["backend"], extra["plugin_slowdown"], case.id)
        checked.append("plugin_slowdown")
    return checked


def thresholds_over_processes(runs: list[dict], thresholds: Thresholds) -> list[str]:
    """The thresholds that the median over processes fails: `runs` are the benchmark files of one tree's processes
    (pytest-benchmark's layout, `params` the case). Returns one line per failure, naming each process's value."""
    values: dict[tuple[str, str], list[float]] = {}
    cases: dict[str, Case] = {}
    for run in runs:
        for bench in run.get("benchmarks", []):
            params, extra = bench.get("params") or {}, bench.get("extra_info") or {}
            if "preset" not in params:
                continue
            cases[bench["name"]] = Case(**params)
            for kind, key in RATIOS:
                if isinstance(extra.get(key), (int, float)):
                    values.setdefault((bench["name"], kind), []).append(float(extra[key]))
    failures = []
    for (name, kind), measured in sorted(values.items()):
        try:
            assert_rule(thresholds, kind, cases[name], statistics.median(measured))
        except ThresholdError as e:
            failures.append(f"{e} (median of {len(measured)} processes: {', '.join(f'{v:.4g}' for v in measured)})")
    return failures
