"""One Mamba block (pre-norm + mixer) of a dense or pruned model: prefill over the sequence, or one decode step
on a filled cache. Pruned cases are timed interleaved with their dense twin."""

import pytest

from perfmamba.bench.suite import check_result, run_case


@pytest.mark.cases(level="block")
def test_block(case, benchmark, record, device, models, thresholds, rounds, warmup, graph):
    result = run_case(case, device, models=models, rounds=rounds, warmup=warmup, benchmark=benchmark,
                      graph=graph)
    record(result)
    check_result(result, thresholds)
