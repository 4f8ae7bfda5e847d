"""The whole language model, dense or pruned: prefill of the prompt, or one decode step on a filled cache.
Pruned cases are timed interleaved with their dense twin; their speedup, GPU peak-memory and decode-cache
reduction are stored in extra_info and checked against thresholds.toml."""

import pytest

from perfmamba.bench.suite import check_result, run_case


@pytest.mark.cases(level="model")
def test_model(case, benchmark, record, device, models, thresholds, rounds, warmup, graph):
    result = run_case(case, device, models=models, rounds=rounds, warmup=warmup, benchmark=benchmark,
                      graph=graph)
    record(result)
    check_result(result, thresholds)
