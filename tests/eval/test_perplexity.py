import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from perfmamba.eval.perplexity import perplexity, windows
from perfmamba.models import ModelConfig, build_model


class Uniform(nn.Module):
    """Zero logits: the uniform distribution over the real vocabulary. The padding columns carry a large
    logit, so a perplexity that forgot to drop them would come out far above the vocabulary size."""

    def __init__(self, vocab: int, padded: int) -> None:
        super().__init__()
        self.vocab, self.padded = vocab, padded

    def forward(self, ids):
        logits = torch.zeros(*ids.shape, self.padded, device=ids.device)
        logits[..., self.vocab :] = 50.0
        return logits


class Bigram(nn.Module):
    """Logits from the previous token alone, so the context a window gives cannot change any prediction."""

    def __init__(self, vocab: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(vocab, vocab, generator=gen) * 2)

    def forward(self, ids):
        return self.table[ids]


def bigram_perplexity(table: torch.Tensor, tokens: torch.Tensor) -> float:
    logp = torch.log_softmax(table.double(), dim=-1)
    return math.exp(-float(logp[tokens[:-1], tokens[1:]].mean()))


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(2, 300), seq_len=st.integers(2, 64), stride_frac=st.floats(0.01, 1.0), batch=st.integers(1, 5),
    vocab=st.sampled_from([7, 50, 256]),
)
def test_uniform_model_perplexity_is_vocab_size(n, seq_len, stride_frac, batch, vocab):
    stride = max(1, round(seq_len * stride_frac))
    tokens = torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(n))
    padded = vocab + 9
    r = perplexity(Uniform(vocab, padded), tokens, seq_len, stride, batch, vocab_size=vocab, progress=False)
    assert r.perplexity == pytest.approx(vocab, rel=1e-5)
    assert r.bits_per_token == pytest.approx(math.log2(vocab), rel=1e-5)
    assert r.n_tokens == n - 1


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 200), seq_len=st.integers(2, 40), stride=st.integers(1, 40))
def test_windows_score_every_target_once(n, seq_len, stride):
    stride = min(stride, seq_len)
    scored = []
    for start, end, first in windows(n, seq_len, stride):
        assert 0 < end - start <= seq_len
        assert 0 <= first < end - start
        scored += range(start + 1 + first, end + 1)
    assert scored == list(range(1, n))
    # after the first window every scored token has at least seq_len - stride tokens of context
    for start, end, first in windows(n, seq_len, stride)[1:]:
        assert first >= min(seq_len - stride, end - start - 1)


@pytest.mark.parametrize("seq_len,stride,batch", [(16, 16, 1), (16, 5, 3), (7, 1, 8), (100, 40, 2)])
def test_bigram_model_matches_direct_computation(seq_len, stride, batch):
    vocab = 20
    model = Bigram(vocab)
    tokens = torch.randint(0, vocab, (257,), generator=torch.Generator().manual_seed(1))
    r = perplexity(model, tokens, seq_len, stride, batch, vocab_size=vocab, progress=False)
    assert r.perplexity == pytest.approx(bigram_perplexity(model.table.detach(), tokens), rel=1e-6)
    assert r.n_tokens == 256
    assert r.nll == pytest.approx(math.log(r.perplexity))


def _small_lm(version: int):
    cfg = ModelConfig(
        version=version, d_model=32, n_layer=2, vocab_size=50, pad_vocab_size_multiple=16, d_state=8, headdim=16,
        chunk_size=8,
    )
    return build_model(cfg, seed=3)


@pytest.mark.parametrize("version", [1, 2])
def test_batch_size_does_not_change_a_real_models_perplexity(version):
    model = _small_lm(version)
    tokens = torch.randint(0, 50, (101,), generator=torch.Generator().manual_seed(0))
    results = [perplexity(model, tokens, 32, 12, b, progress=False) for b in (1, 3, 100)]
    assert results[0].n_tokens == 100
    for r in results[1:]:
        assert r.perplexity == pytest.approx(results[0].perplexity, rel=1e-5)
    # the padded columns of a real model's logits are excluded: vocab_size comes from model.config
    assert model.config.padded_vocab_size > model.config.vocab_size


def test_stride_gives_more_context_to_a_real_model():
    model = _small_lm(1)
    tokens = torch.randint(0, 50, (60,), generator=torch.Generator().manual_seed(0))
    full = perplexity(model, tokens, 16, 16, progress=False)
    sliding = perplexity(model, tokens, 16, 4, progress=False)
    assert full.n_tokens == sliding.n_tokens == 59
    assert full.perplexity != sliding.perplexity


def test_deterministic_and_leaves_training_mode():
    model = _small_lm(2).train()
    tokens = torch.randint(0, 50, (60,), generator=torch.Generator().manual_seed(0))
    a = perplexity(model, tokens, 32, 8, 4, progress=False)
    b = perplexity(model, tokens, 32, 8, 4, progress=False)
    assert a == b
    assert model.training


def test_progress_bar_writes_to_stderr(capsys):
    perplexity(Uniform(10, 16), torch.arange(10).repeat(5), 8, progress=True, vocab_size=10)
    assert "perplexity" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs,tokens,match",
    [
        ({"seq_len": 1}, torch.arange(10), "seq_len must be >= 2, got 1"),
        ({"seq_len": 8, "stride": 9}, torch.arange(10), r"stride must be in \[1, seq_len=8\], got 9"),
        ({"seq_len": 8, "stride": 0}, torch.arange(10), "stride must be in"),
        ({"batch_size": 0}, torch.arange(10), "batch_size must be >= 1"),
        ({}, torch.arange(10).view(2, 5), "must be a 1-D tensor"),
        ({}, torch.tensor([3]), "at least 2 tokens"),
        ({}, torch.tensor([1, 2, 10]), r"token id 10 is outside the model's vocabulary \[0, 10\)"),
        ({}, torch.tensor([1, -1, 2]), "token id -1"),
        ({}, torch.tensor([1.0, 2.0]), "integer token ids"),
    ],
)
def test_bad_arguments_are_named(kwargs, tokens, match):
    with pytest.raises(ValueError, match=match):
        perplexity(Uniform(10, 16), tokens, vocab_size=10, progress=False, **kwargs)


@pytest.mark.gpu
@pytest.mark.parametrize("version", [1, 2])
def test_cpu_and_gpu_agree(version):
    model = _small_lm(version)
    tokens = torch.randint(0, 50, (300,), generator=torch.Generator().manual_seed(0))
    cpu = perplexity(model, tokens, 64, 32, 4, progress=False)
    gpu = perplexity(model.cuda(), tokens, 64, 32, 4, progress=False)
    assert gpu.n_tokens == cpu.n_tokens
    assert gpu.perplexity == pytest.approx(cpu.perplexity, rel=1e-4)
    uniform = perplexity(Uniform(50, 64), tokens.cuda(), 64, progress=False, vocab_size=50)
    assert uniform.perplexity == pytest.approx(50, rel=1e-5)
