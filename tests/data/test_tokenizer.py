import pytest
import torch

from perfmamba.data.corpus import load_corpus
from perfmamba.data.tokenizer import ByteTokenizer, HFTokenizer, check_vocab, load_tokenizer


def test_byte_tokenizer_round_trips_any_text():
    tok = load_tokenizer()
    assert isinstance(tok, ByteTokenizer) and tok.vocab_size == 256 and tok.identity == "byte"
    text = "déf f(x):\n    return x  # ∑ 🐍"
    ids = tok.encode(text.encode("utf-8"))
    assert ids.dtype == torch.long and ids.numel() == len(text.encode("utf-8"))
    assert int(ids.max()) < 256
    assert tok.decode(ids) == text
    assert tok.encode(b"").numel() == 0


def _write_word_tokenizer(path, words):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


def test_hf_tokenizer_file(tmp_path):
    path = _write_word_tokenizer(tmp_path / "tokenizer.json", ["the", "cat", "sat"])
    for spec in (path, tmp_path):  # the file or the folder holding it
        tok = load_tokenizer(spec)
        assert isinstance(tok, HFTokenizer)
        assert tok.vocab_size == 4
        assert tok.encode(b"the cat sat on").tolist() == [1, 2, 3, 0]
        assert tok.identity.startswith("hf:tokenizer.json:sha256:")
    (tmp_path / "corpus.txt").write_text("the cat sat\n" * 50)
    corpus = load_corpus(tmp_path / "corpus.txt", tok)
    assert corpus.tokenizer == tok.identity
    assert corpus.train.numel() + corpus.val.numel() == 150


def test_hf_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such tokenizer file"):
        load_tokenizer(tmp_path / "missing.json")
    pytest.importorskip("tokenizers")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid Hugging Face tokenizer file"):
        load_tokenizer(tmp_path / "bad.json")
    tok = load_tokenizer(_write_word_tokenizer(tmp_path / "t.json", ["a"]))
    with pytest.raises(ValueError, match="not UTF-8 text"):
        tok.encode(b"\xff\xfe", "x.txt")


def test_vocab_larger_than_the_models_is_refused(tmp_path):
    check_vocab(ByteTokenizer(), 256)
    with pytest.raises(ValueError, match="vocab_size=256, more than the model's vocab_size=50"):
        check_vocab(ByteTokenizer(), 50)
