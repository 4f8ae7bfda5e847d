"""Perplexity of the trained byte-level presets on held-out text, dense and pruned at each ratio with each
criterion: the benchmark times one evaluation pass, extra_info holds the perplexity and its increase over the
dense model, and thresholds.toml bounds the increase."""

import pytest

from perfmamba.bench.cases import Case
from perfmamba.bench.harness import measure
from perfmamba.bench.quality import QualityCache
from perfmamba.bench.suite import CaseResult
from perfmamba.bench.thresholds import assert_rule


@pytest.fixture(scope="session")
def quality(device):
    return QualityCache(device)


@pytest.mark.cases(quality=True)
def test_perplexity(case: Case, benchmark, record, device, quality, thresholds):
    model = quality.model(case)
    values = []
    samples, _ = measure(benchmark, lambda: values.append(quality.evaluate(model, case)), device, rounds=1, warmup=0,
                         graph=False)
    extra = {"case": case.id, "device": str(device), "perplexity": values[-1], "d_states": list(model.config.d_states),
             **samples.summary(), "samples_s": list(samples.seconds)}
    if case.pruned:
        extra["dense_perplexity"] = quality.perplexity(case.dense())
        extra["perplexity_increase"] = values[-1] / extra["dense_perplexity"] - 1.0
    record(CaseResult(case, samples, {}, extra))
    if case.pruned:
        assert_rule(thresholds, "perplexity", case, extra["perplexity_increase"])
