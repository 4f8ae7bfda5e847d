"""The SSM scan op alone (Mamba-1 selective scan, Mamba-2 SSD; decode: the one-step state update) at each
case's shapes: every kernel that "auto" runs is checked against the reference first, then the op is timed;
pruned cases against their dense twin, plugged-in kernels against the built-in backend."""

import pytest

from perfmamba.bench.suite import check_kernels, check_result, run_case


@pytest.mark.cases(level="op")
def test_op(case, benchmark, record, device, models, thresholds, rounds, warmup, graph):
    kernels = check_kernels(case, device, thresholds)
    result = run_case(case, device, models=models, rounds=rounds, warmup=warmup, benchmark=benchmark,
                      graph=graph)
    result.extra_info["kernels"] = kernels
    record(result)
    check_result(result, thresholds)
