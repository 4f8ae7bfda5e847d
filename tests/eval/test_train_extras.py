"""The trainer's options for recipes beyond the presets (another architecture, another batch function, a time
guard) and the sizing of a run to a time budget."""

import pytest

from perfmamba.data.corpus import load_corpus
from perfmamba.eval.recipe import TrainConfig, batch_at, steps_for_budget, train_config
from perfmamba.eval.train import LOG_FILE, LOG_KIND, train
from perfmamba.models import load_model
from perfmamba.models.config import ModelConfig
from perfmamba.results import read_json

SMALL = ModelConfig(version=1, d_model=16, n_layer=1, vocab_size=256, d_state=4)


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "text.txt").write_bytes(b"for i in range(10):\n    print(i)\n" * 200)
    return load_corpus(tmp_path / "text.txt")


def _config(steps: int) -> TrainConfig:
    return TrainConfig(preset="mamba1-tiny", steps=steps, batch_size=2, seq_len=32, warmup_steps=1,
                       eval_tokens=256, eval_seq_len=64)


def test_model_config_and_batch_fn_replace_the_presets(tmp_path, corpus):
    seen = []

    def batch_fn(tokens, config, step):
        seen.append(step)
        return batch_at(tokens, config, step)

    out = train(_config(3), tmp_path / "run", device="cpu", corpus=corpus, progress=False, model_config=SMALL,
                batch_fn=batch_fn)
    assert seen == [0, 1, 2]
    assert load_model(out).config.d_model == 16
    log = read_json(out / LOG_FILE, kind=LOG_KIND)
    assert log["model_config"]["d_model"] == 16 and log["stopped_by_time"] is False
    assert log["tokens_seen"] == 3 * 2 * 32 and log["steps_done"] == 3


def test_max_seconds_stops_after_the_step_that_reaches_it(tmp_path, corpus):
    out = train(_config(50), tmp_path / "run", device="cpu", corpus=corpus, progress=False, model_config=SMALL,
                max_seconds=0.0)
    log = read_json(out / LOG_FILE, kind=LOG_KIND)
    assert log["steps_done"] == 1 and log["stopped_by_time"] is True and log["max_seconds"] == 0.0
    assert log["completed"] is True and log["validation"]["perplexity"] > 1


def test_a_preset_run_logs_no_extras(tmp_path, corpus):
    cfg = _config(2).replace(preset="mamba1-tiny")
    log = read_json(train(cfg, tmp_path / "run", device="cpu", corpus=corpus, progress=False) / LOG_FILE)
    assert "model_config" not in log and log["tokens_seen"] == 2 * 2 * 32


def test_steps_for_budget():
    cfg = steps_for_budget(train_config("mamba2-130m"), 300.0, 0.25)
    assert (cfg.steps, cfg.warmup_steps) == (1200, 60)
    assert steps_for_budget(cfg, 1.0, 10.0).steps == 1 and steps_for_budget(cfg, 1.0, 10.0).warmup_steps == 1
    with pytest.raises(ValueError, match="seconds and step_seconds must be > 0, got 300.0 and 0"):
        steps_for_budget(cfg, 300.0, 0)


def test_the_130m_recipes_train_long_rows():
    for version in (1, 2):
        cfg = train_config(f"mamba{version}-130m")
        assert cfg.seq_len == 2048 and cfg.batch_size * cfg.seq_len == 32768
        assert cfg.checkpoint_every > 100_000  # a 130m state file every few steps would eat the time budget
