"""MambaLM.generate: the eager loop against a hand-written one, sampling, argument errors, and (on a GPU) the
CUDA-graph decode step against the eager one."""

import copy

import pytest
import torch

from perfmamba.models import ModelConfig, build_model
from perfmamba.models.lm import sample_tokens

TINY = {
    1: ModelConfig(version=1, d_model=32, n_layer=2, vocab_size=50, d_state=8),
    2: ModelConfig(version=2, d_model=32, n_layer=2, vocab_size=50, pad_vocab_size_multiple=16, d_state=16,
                   headdim=16, chunk_size=8),
}


def manual_greedy(model, ids, new):
    """Prefill, then one `step` per token, argmax over the real (unpadded) vocabulary."""
    vocab = model.config.vocab_size
    with torch.no_grad():
        cache = model.allocate_cache(ids.shape[0])
        token = model(ids, cache=cache)[:, -1, :vocab].argmax(-1)
        out = [token]
        for _ in range(new - 1):
            token = model.step(token, cache)[:, :vocab].argmax(-1)
            out.append(token)
    return torch.stack(out, 1)


@pytest.mark.parametrize("version", [1, 2])
def test_eager_generate_equals_a_manual_step_loop(version):
    model = build_model(TINY[version], seed=3)
    ids = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(0))
    out = model.generate(ids, 6)
    assert out.shape == (3, 6) and out.dtype == torch.long
    assert torch.equal(out, manual_greedy(model, ids, 6))
    assert torch.equal(model.generate(ids, 1), out[:, :1])


def test_generate_never_picks_a_padding_row():
    cfg = TINY[2]  # vocab 50 padded to 64
    model = build_model(cfg, seed=0)
    with torch.no_grad():
        model.lm_head.weight[cfg.vocab_size:] = 10 * model.lm_head.weight[:1]  # padding rows would win the argmax
    out = model.generate(torch.zeros(2, 3, dtype=torch.long), 5)
    assert int(out.max()) < cfg.vocab_size


def test_num_last_tokens_gives_the_last_logits():
    model = build_model(TINY[1], seed=1)
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids, num_last_tokens=2), model(ids)[:, -2:], rtol=1e-5, atol=1e-6)


def test_sampling_is_seeded_and_top_k_limits_the_choice():
    model = build_model(TINY[1], seed=2)
    ids = torch.randint(0, 50, (4, 5), generator=torch.Generator().manual_seed(1))

    def draw(seed, **kw):
        return model.generate(ids, 8, generator=torch.Generator().manual_seed(seed), **kw)

    assert torch.equal(draw(0, top_k=0, temperature=5.0), draw(0, top_k=0, temperature=5.0))
    assert not torch.equal(draw(0, top_k=0, temperature=5.0), draw(1, top_k=0, temperature=5.0))
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0]] * 200)
    picked = sample_tokens(logits, top_k=2, temperature=10.0, generator=torch.Generator().manual_seed(0))
    assert set(picked.tolist()) == {1, 2}  # hot enough to pick both, never outside the top 2
    assert torch.equal(sample_tokens(logits), torch.ones(200, dtype=torch.long))


@pytest.mark.parametrize("kwargs, message", [
    ({"max_new_tokens": 0}, r"^max_new_tokens must be an integer >= 1, got 0$"),
    ({"max_new_tokens": 2.5}, r"^max_new_tokens must be an integer >= 1, got 2.5$"),
    ({"top_k": -1}, r"^top_k must be an integer >= 0, got -1$"),
    ({"temperature": 0.0}, r"^temperature must be a number > 0, got 0.0$"),
    ({"cg": True}, r"^cg=True needs the model on a CUDA device; it is on cpu \(use cg=False\)$"),
    ({"input_ids": torch.zeros(5, dtype=torch.long)}, r"^input_ids must be \(batch, seqlen\) with seqlen >= 1"),
    ({"input_ids": torch.zeros(2, 0, dtype=torch.long)}, r"got shape \(2, 0\)$"),
])
def test_argument_errors_are_one_line(kwargs, message):
    model = build_model(TINY[1], seed=0)
    args = {"input_ids": torch.zeros(1, 3, dtype=torch.long), "max_new_tokens": 2, **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        model.generate(args.pop("input_ids"), args.pop("max_new_tokens"), **args)
    assert "\n" not in str(info.value)


@pytest.mark.gpu
@pytest.mark.parametrize("version", [1, 2])
def test_cuda_graph_generate_equals_eager(version):
    cfg = TINY[version].replace(d_model=64, n_layer=3, vocab_size=1000)
    model = build_model(cfg, device="cuda", seed=0)
    ids = torch.randint(0, cfg.vocab_size, (4, 33), device="cuda")
    eager = model.generate(ids, 20)
    assert torch.equal(model.generate(ids, 20, cg=True), eager)
    # a second call replays the same graph from a fresh prefill; another batch size captures its own
    assert torch.equal(model.generate(ids, 20, cg=True), eager)
    assert torch.equal(model.generate(ids[:1], 20, cg=True), model.generate(ids[:1], 20))
    # a pruning-style deep copy is unaffected by the graphs the model keeps
    twin = copy.deepcopy(model)
    assert torch.equal(twin.generate(ids, 5, cg=True), eager[:, :5])


@pytest.mark.gpu
def test_cuda_graph_follows_new_weights():
    model = build_model(TINY[1].replace(vocab_size=1000), device="cuda", dtype=torch.bfloat16, seed=0)
    ids = torch.randint(0, 1000, (2, 16), device="cuda")
    model.generate(ids, 4, cg=True)
    model.float()  # new parameter storage (and dtype): the old graph would read freed memory
    assert torch.equal(model.generate(ids, 8, cg=True), model.generate(ids, 8))
