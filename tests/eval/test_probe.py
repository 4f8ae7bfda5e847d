"""The recall and copy probes: their examples, their scoring (against fake models that always, never or half
recall) and the training rows that teach recall."""

import pytest
import torch
from torch import nn

from perfmamba.data.tokenizer import ByteTokenizer, HFTokenizer
from perfmamba.eval.probe import (
    COPY_SKIP,
    copy_examples,
    make_copy_probe,
    make_probe,
    recall_batch_fn,
    recall_example,
    recall_row,
    score_examples,
    score_probe,
)
from perfmamba.eval.recipe import TrainConfig, batch_at

FILLER_TEXT = b"def f(x):\n    return x * 2  # a = b\n" * 400


class Copier(nn.Module):
    """Predicts, at each position, the token that followed the longest earlier match of the text ending there
    (an induction head with unbounded memory): recalls every pair exactly. `forget_after` tokens of a value
    are recalled, the rest guessed as token 0."""

    def __init__(self, vocab: int, forget_after: int | None = None, cap: int = 24):
        super().__init__()
        self.vocab, self.forget_after, self.cap = vocab, forget_after, cap
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        out = torch.zeros(*ids.shape, self.vocab)
        for r, x in enumerate(ids):
            L = x.numel()
            eq = (x[:, None] == x[None, :]).long()
            match = eq.clone()
            for _ in range(self.cap):
                shifted = torch.zeros_like(match)
                shifted[1:, 1:] = match[:-1, :-1]
                match = eq * (1 + shifted)
            match = match.tril(-1).float() + torch.arange(L) * 1e-6  # ties: the latest
            j = match.argmax(1)
            pred = x[(j + 1).clamp(max=L - 1)]
            if self.forget_after is not None:
                # how far into the matched continuation: a match longer than the key prompt is inside a value
                run = match.max(1).values.long()
                pred = torch.where(run > 8 + self.forget_after - 1, torch.zeros_like(pred), pred)
            out[r, torch.arange(L), pred] = 1.0
        return out


class Never(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        return torch.zeros(*ids.shape, self.vocab)  # argmax: token 0, never part of a value


def _filler(tok=None):
    return (tok or ByteTokenizer()).encode(FILLER_TEXT)


def _bpe(tmp_path) -> HFTokenizer:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.train_from_iterator([FILLER_TEXT.decode()] * 3 + ["#abc=XYZ123\n"] * 3,
                          trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    t.save(str(tmp_path / "tokenizer.json"))
    return HFTokenizer(tmp_path / "tokenizer.json")


def test_an_example_is_pair_filler_query_value():
    tok = ByteTokenizer()
    e = recall_example(tok, _filler(), 100, torch.Generator().manual_seed(0))
    text = tok.decode(e.ids)
    key, rest = text[1:].split("=", 1)
    value = rest.split("\n", 1)[0]
    assert text.startswith("#") and len(key) == 6 and key.islower() and len(value) == 6
    assert text.endswith(f"#{key}={value}") and tok.decode(e.answer) == value
    assert e.ids.numel() == 2 * (8 + 6) + 1 + 100 and e.distance == 100


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_a_perfect_copier_scores_one_and_a_blank_model_zero(tokenizer, tmp_path):
    tok = ByteTokenizer() if tokenizer == "byte" else _bpe(tmp_path)
    probe = make_probe(tok, _filler(tok), distances=(16, 200), n=6, seed=3)
    vocab = tok.vocab_size
    for s in score_probe(Copier(vocab), probe, batch_size=4):
        assert (s.exact_match, s.token_accuracy, s.n) == (1.0, 1.0, 6) and s.value_tokens >= 6
    for s in score_probe(Never(vocab), probe, batch_size=lambda d: 2):
        assert (s.exact_match, s.token_accuracy) == (0.0, 0.0)
    assert [s.distance for s in score_probe(Never(vocab), probe)] == [16, 200]


def test_half_a_value_is_no_exact_match():
    probe = make_probe(ByteTokenizer(), _filler(), distances=(64,), n=5, seed=1)
    (s,) = score_probe(Copier(256, forget_after=3), probe)
    assert s.exact_match == 0.0 and s.token_accuracy == pytest.approx(0.5)


def test_the_probe_is_a_function_of_its_seed():
    a = make_probe(ByteTokenizer(), _filler(), distances=(32, 64), n=3, seed=0)
    b = make_probe(ByteTokenizer(), _filler(), distances=(32, 64), n=3, seed=0)
    c = make_probe(ByteTokenizer(), _filler(), distances=(32, 64), n=3, seed=1)
    assert all(torch.equal(x.ids, y.ids) for d in a for x, y in zip(a[d], b[d]))
    assert not all(torch.equal(x.ids, y.ids) for d in a for x, y in zip(a[d], c[d]))


def test_a_tiny_model_is_scored_in_range():
    from perfmamba.models import build_model

    probe = make_probe(ByteTokenizer(), _filler(), distances=(32,), n=4)
    (s,) = score_probe(build_model("mamba1-tiny"), probe, batch_size=3)
    assert s.n == 4 and 0.0 <= s.exact_match <= s.token_accuracy <= 1.0 and s.value_tokens == 24


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="filler has 14400 tokens, fewer than the 20000 needed"):
        make_probe(ByteTokenizer(), _filler(), distances=(20000,), n=1)
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        make_probe(ByteTokenizer(), _filler(), n=0)
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\], got 1.5"):
        recall_batch_fn(ByteTokenizer(), _filler(), 1.5)
    with pytest.raises(ValueError, match="no examples"):
        score_examples(Never(256), [])


def test_a_training_row_has_its_length_and_recallable_pairs():
    tok = ByteTokenizer()
    row = recall_row(tok, _filler(), 512, torch.Generator().manual_seed(0), pairs=4)
    assert row.numel() == 512
    text = tok.decode(row)
    import re

    pairs = re.findall(r"#([a-z]{6})=([A-Z0-9]{6})", text)
    keys = [k for k, _ in pairs]
    assert len(pairs) == 8 and sorted(set(keys)) == sorted(keys[:4])  # stored once, queried once
    assert all(dict(pairs[:4])[k] == v for k, v in pairs[4:])
    short = recall_row(tok, _filler(), 40, torch.Generator().manual_seed(0), pairs=4)
    assert short.numel() == 40 and len(re.findall(r"#[a-z]{6}=", tok.decode(short))) == 2  # one pair fits


def test_recall_batches_replace_a_fraction_of_rows_by_step():
    tokens = _filler()
    cfg = TrainConfig(batch_size=64, seq_len=128, seed=0)
    none = recall_batch_fn(ByteTokenizer(), tokens, 0.0)
    assert torch.equal(none(tokens, cfg, 5), batch_at(tokens, cfg, 5))
    fn = recall_batch_fn(ByteTokenizer(), tokens, 0.25)
    a, b = fn(tokens, cfg, 7), fn(tokens, cfg, 7)
    assert torch.equal(a, b) and a.shape == (64, 129)
    swapped = (a != batch_at(tokens, cfg, 7)).any(1)
    assert 6 <= int(swapped.sum()) <= 26  # 16 expected
    assert all(b"#" in bytes(row.tolist()) for row in a[swapped])
    assert not torch.equal(fn(tokens, cfg, 8), a)


def _random_tokens(n=6000, seed=0):
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed))


def test_a_copy_repeats_its_span_and_its_control_never_shows_it():
    filler = _random_tokens()
    copy, control = copy_examples(filler, 100, torch.Generator().manual_seed(0), span=32)
    assert copy.ids.numel() == control.ids.numel() == 32 + 100 + 32 and copy.distance == 100
    assert torch.equal(copy.ids[:32], copy.ids[-32:]) and torch.equal(copy.ids[32:], control.ids[32:])
    assert not torch.equal(control.ids[:32], copy.ids[:32])
    assert copy.answer_start == control.answer_start == 132 + COPY_SKIP


def test_an_induction_head_copies_and_gains_nothing_on_the_control():
    probe = make_copy_probe(_random_tokens(), distances=(50, 400), n=4, seed=2, span=32)
    copies = score_probe(Copier(256), probe["copy"], batch_size=2)
    controls = score_probe(Copier(256), probe["control"], batch_size=2)
    assert [(s.distance, s.exact_match, s.token_accuracy) for s in copies] == [(50, 1.0, 1.0), (400, 1.0, 1.0)]
    assert all(s.token_accuracy < 0.2 and s.value_tokens == 4 * (32 - COPY_SKIP) for s in controls)
    again = make_copy_probe(_random_tokens(), distances=(50, 400), n=4, seed=2, span=32)
    assert all(torch.equal(a.ids, b.ids) for d in (50, 400) for a, b in zip(probe["copy"][d], again["copy"][d]))


def test_copy_probe_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"skip must be in \[0, 16\), got 16"):
        copy_examples(_random_tokens(), 10, torch.Generator(), span=16, skip=16)
    with pytest.raises(ValueError, match="filler has 6000 tokens, fewer than the 9000 needed"):
        make_copy_probe(_random_tokens(), distances=(9000,), n=1)
