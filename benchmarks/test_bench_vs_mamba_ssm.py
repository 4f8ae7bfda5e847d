"""Our model against mamba-ssm's `MambaLMHeadModel` holding the same weights (issue 15): prefill and the decode
step, timed interleaved in one process as CUDA-graph replays; extra_info holds both times and their ratio, and
thresholds.toml bounds ours / mamba-ssm's. GPU only: without CUDA or mamba-ssm every case skips with the reason."""

import pytest

from perfmamba.bench.reference_model import unavailable_reason
from perfmamba.bench.suite import check_result, run_case


@pytest.mark.cases(level="vs_mamba_ssm")
def test_vs_mamba_ssm(case, benchmark, record, device, models, thresholds, rounds, warmup, graph):
    reason = unavailable_reason(device)
    if reason is not None:
        pytest.skip(reason)
    result = run_case(case, device, models=models, rounds=rounds, warmup=warmup, benchmark=benchmark,
                      graph=graph)
    record(result)
    check_result(result, thresholds)
