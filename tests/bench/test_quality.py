import pytest
import torch

from perfmamba.bench.cases import Case
from perfmamba.bench.quality import EvalAPI, QualityCache
from perfmamba.bench.thresholds import ThresholdError, assert_rule, parse_thresholds
from perfmamba.models import build_model


class FakeCorpus:
    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        # a repetitive byte stream: a model can be "good" on it, and a broken one visibly worse
        self.train = torch.randint(0, 256, (64 * 256,), generator=gen)
        self.val = self.train[: 16 * 256].clone()

    def tokens(self, split):
        return {"train": self.train, "val": self.val}[split]


def fake_api(calls):
    from perfmamba.eval import perplexity

    def trained_model(preset, device=None, progress=None):
        calls.append(preset)
        return build_model(preset, device=device)

    return EvalAPI(trained_model=trained_model, load_corpus=FakeCorpus, perplexity=perplexity)


def test_quality_cache_scores_dense_and_pruned_models_once(cpu_bench):
    pytest.importorskip("perfmamba.eval")
    calls = []
    cache = QualityCache(cpu_bench, fake_api(calls))
    pruned = Case("mamba1-tiny", "model", "prefill", 128, 1, 0.5, "contribution")
    dense_ppl = cache.perplexity(pruned.dense())
    increase = cache.increase(pruned)
    assert calls == ["mamba1-tiny"]  # the trained model is fetched once per preset
    assert 100 < dense_ppl < 1000  # an untrained byte model: near the uniform 256
    assert increase == pytest.approx(cache.perplexity(pruned) / dense_ppl - 1)
    assert cache.model(pruned).config.d_states == (8,) * 4 and cache.model(pruned.dense()).config.d_state == 16


def test_perplexity_threshold_fails_on_a_large_increase():
    t = parse_thresholds({"cpu": {"kernel_max_rel_error": 1e-4, "plugin_max_slowdown": 1.25, "perplexity": [
        {"version": 1, "ratio": 0.5, "criterion": "contribution", "max": 0.05}]}}, "cpu")
    case = Case("mamba1-tiny", "model", "prefill", 256, 1, 0.5, "contribution")
    assert assert_rule(t, "perplexity", case, 0.01) is not None
    with pytest.raises(ThresholdError, match=r"perplexity .* 0\.2 is above the maximum threshold 0\.05"):
        assert_rule(t, "perplexity", case, 0.2)
    assert t.rule("perplexity", Case("mamba1-tiny", "model", "prefill", 256, 1, 0.5, "random")) is None
