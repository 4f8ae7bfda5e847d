import math
import os
import signal

import pytest
import torch

from perfmamba.data.corpus import load_corpus
from perfmamba.eval.cache import trained_model_dir
from perfmamba.eval.recipe import TrainConfig, batch_at, learning_rate, train_config
from perfmamba.eval.train import LOG_FILE, LOG_KIND, STATE_FILE, train, unigram_perplexity
from perfmamba.models import load_model
from perfmamba.results import read_json

# A few steps of tiny batches: enough to exercise every path of the trainer in seconds.
QUICK = dict(steps=6, batch_size=2, seq_len=32, warmup_steps=2, eval_tokens=512, eval_seq_len=64, checkpoint_every=2)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def test_learning_rate_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [learning_rate(cfg, s) for s in range(cfg.steps)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[10 + 89 // 2] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 44 / 89)))


def test_batches_depend_on_seed_and_step_only():
    tokens = torch.arange(1000)
    cfg = TrainConfig(batch_size=4, seq_len=16)
    a = batch_at(tokens, cfg, 7)
    assert a.shape == (4, 17)
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(4, 16, dtype=torch.long))  # contiguous windows
    assert torch.equal(a, batch_at(tokens, cfg, 7))
    assert not torch.equal(a, batch_at(tokens, cfg, 8))
    assert not torch.equal(a, batch_at(tokens, cfg.replace(seed=1), 7))
    with pytest.raises(ValueError, match="fewer than seq_len"):
        batch_at(torch.arange(10), cfg, 0)


def test_config_validation():
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="seq_len and eval_seq_len must be >= 2"):
        TrainConfig(seq_len=1)
    with pytest.raises(ValueError, match="no training recipe for preset 'mamba1-1.4b'"):
        train_config("mamba1-1.4b")
    assert train_config("mamba2-tiny", steps=5, lr=None).steps == 5


def test_training_writes_a_loadable_checkpoint_and_log(tmp_path, corpus):
    cfg = train_config("mamba1-tiny", **QUICK)
    out = train(cfg, tmp_path / "run", corpus=corpus, progress=False)
    log = read_json(out / LOG_FILE, kind=LOG_KIND)
    assert log["completed"] and log["steps_done"] == 6 and len(log["losses"]) == 6
    assert log["corpus"]["sha256"] == corpus.sha256
    assert log["config"]["steps"] == 6
    val = log["validation"]
    assert val["n_tokens"] == 511 and val["uniform_perplexity"] == 256
    assert 1 < val["perplexity"] < 256  # six steps already beat the uniform guess
    assert not (out / STATE_FILE).exists()
    model = load_model(out)
    assert model.config.vocab_size == 256
    # a finished run is returned as it is
    mtime = (out / "pytorch_model.bin").stat().st_mtime_ns
    assert train(cfg, out, corpus=corpus, progress=False) == out
    assert (out / "pytorch_model.bin").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="finished run of a different config.*lr"):
        train(cfg.replace(lr=1e-3), out, corpus=corpus, progress=False)


@pytest.mark.parametrize("preset", ["mamba1-tiny", "mamba2-tiny"])
def test_resumed_training_equals_uninterrupted(tmp_path, corpus, preset):
    cfg = train_config(preset, **QUICK)
    straight = load_model(train(cfg, tmp_path / "straight", corpus=corpus, progress=False))

    def interrupt_at_3(done, loss):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", corpus=corpus, progress=False, on_step=interrupt_at_3)
    state = torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=False)
    assert state["step"] == 3  # the step finished before the interrupt is kept, though checkpoint_every=2
    log = read_json(tmp_path / "resumed" / LOG_FILE, kind=LOG_KIND)
    assert not log["completed"] and log["steps_done"] == 3
    with pytest.raises(ValueError, match="different config.*batch_size"):
        train(cfg.replace(batch_size=3), tmp_path / "resumed", corpus=corpus, progress=False)
    resumed = load_model(train(cfg, tmp_path / "resumed", corpus=corpus, progress=False))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert read_json(tmp_path / "resumed" / LOG_FILE)["losses"] == read_json(tmp_path / "straight" / LOG_FILE)["losses"]


def test_a_signal_inside_an_optimizer_step_waits_for_the_step(tmp_path, corpus, monkeypatch):
    """SIGTERM arriving in the middle of step 4's update (after the weights changed, before the step is counted)
    must not save weights one update ahead of the saved step: the resumed run equals the straight one."""
    cfg = train_config("mamba1-tiny", **QUICK)
    straight = load_model(train(cfg, tmp_path / "straight", corpus=corpus, progress=False))
    calls = {"n": 0}
    original = torch.optim.AdamW.step

    def step_then_signal(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_signal)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", corpus=corpus, progress=False)
    monkeypatch.setattr(torch.optim.AdamW, "step", original)
    assert torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=False)["step"] == 4
    resumed = load_model(train(cfg, tmp_path / "resumed", corpus=corpus, progress=False))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_cache_trains_once_per_config(tmp_path):
    first = trained_model_dir("mamba1-tiny", cache_dir=tmp_path, progress=False, **QUICK)
    mtime = (first / "pytorch_model.bin").stat().st_mtime_ns
    assert trained_model_dir("mamba1-tiny", cache_dir=tmp_path, progress=False, **QUICK) == first
    assert (first / "pytorch_model.bin").stat().st_mtime_ns == mtime
    other = trained_model_dir("mamba1-tiny", cache_dir=tmp_path, progress=False, **{**QUICK, "seed": 1})
    assert other != first and other.parent == first.parent


def test_unigram_baseline():
    train_tokens = torch.tensor([0, 0, 0, 1])
    # add-one smoothing over a vocabulary of 2: p(0) = 4/6, p(1) = 2/6
    assert unigram_perplexity(train_tokens, torch.tensor([0, 1]), 2) == pytest.approx(math.sqrt(1 / (4 / 6 * 2 / 6)))
