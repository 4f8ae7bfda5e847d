import pytest
import torch

from perfmamba.eval.evaluate import EVAL_KIND, evaluate, write_eval
from perfmamba.models import ModelConfig, build_model, save_model
from perfmamba.results import read_json

SMALL = ModelConfig(version=1, d_model=16, n_layer=1, vocab_size=256, d_state=4)


@pytest.fixture
def checkpoint(tmp_path):
    return save_model(build_model(SMALL, seed=0), tmp_path / "model")


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("def f(x):\n    return x + 1\n" * 20)
    return path


def test_evaluate_a_checkpoint_on_a_user_file(checkpoint, text, tmp_path):
    r = evaluate(checkpoint, text, seq_len=64, stride=32, progress=False)
    assert r.split == "all"  # a user's file is scored whole
    assert r.result.n_tokens == text.stat().st_size - 1
    assert r.corpus["name"] == str(text) and r.corpus["tokenizer"] == "byte"
    assert 50 < r.result.perplexity < 1000  # an untrained byte model is near the uniform 256
    out = write_eval(tmp_path / "eval.json", r)
    doc = read_json(out, kind=EVAL_KIND)
    assert doc["perplexity"] == r.result.perplexity and doc["corpus"]["sha256"] == r.corpus["sha256"]


def test_evaluate_a_model_object_on_the_stdlib_validation_split():
    model = build_model(SMALL, seed=0)
    r = evaluate(model, max_tokens=300, seq_len=100, progress=False)
    assert r.split == "val" and r.result.n_tokens == 299
    assert r.corpus["name"].endswith("-stdlib")
    # naming the default corpus ("--data stdlib") still scores its validation files, not the training ones
    assert evaluate(model, "stdlib", max_tokens=300, seq_len=100, progress=False).split == "val"


def test_clear_errors(checkpoint, text, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        evaluate(tmp_path / "no" / "model", text)
    with pytest.raises(ValueError, match="neither a checkpoint directory nor a preset"):
        evaluate("mamba9-huge", text)
    with pytest.raises(FileNotFoundError, match="missing.txt: no such file or directory"):
        evaluate(checkpoint, tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="the corpus is empty"):
        evaluate(checkpoint, tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="seq_len must be >= 2, got 1"):
        evaluate(checkpoint, text, seq_len=1)
    with pytest.raises(ValueError, match="split must be one of"):
        evaluate(checkpoint, text, split="test")


def test_tokenizer_larger_than_the_model_is_refused(tmp_path, text):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models

    vocab = {f"w{i}": i for i in range(300)}
    tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="w0")).save(str(tmp_path / "tokenizer.json"))
    model = build_model(SMALL, seed=0)
    with pytest.raises(ValueError, match="vocab_size=300, more than the model's vocab_size=256"):
        evaluate(model, text, tmp_path / "tokenizer.json")


def test_device_argument_moves_a_model_object():
    model = build_model(SMALL, seed=0)
    r = evaluate(model, max_tokens=100, device="cpu", progress=False)
    assert r.result.n_tokens == 99
    assert next(model.parameters()).device == torch.device("cpu")
