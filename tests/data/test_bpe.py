import random

import pytest
import torch

from perfmamba.data import load_corpus, load_tokenizer, train_tokenizer
from perfmamba.data.corpus import file_split

pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(max_bytes=400_000)  # the stdlib's source: real text, trained on in about a second


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    return train_tokenizer(corpus, 1000, tmp_path_factory.mktemp("bpe") / "tokenizer.json")


def _random_text(rng, n):
    # any code point but the surrogates, which UTF-8 cannot carry; plus text the trainer never saw
    points = [rng.choice([rng.randrange(0, 0x80), rng.randrange(0x80, 0xD800), rng.randrange(0xE000, 0x110000)])
              for _ in range(n)]
    return "".join(map(chr, points)) + " déf  \t\r\n∑ 🐍 \x00 ĳ"


def test_round_trips_any_text(trained, corpus):
    assert 256 < trained.vocab_size <= 1000
    rng = random.Random(0)
    for text in [_random_text(rng, n) for n in (0, 1, 5, 300)] + [bytes(corpus.val[:5000].tolist()).decode()]:
        ids = trained.encode(text.encode("utf-8"))
        assert ids.dtype == torch.long and (ids.numel() == 0 or int(ids.max()) < trained.vocab_size)
        assert trained.decode(ids) == text
    code = bytes(corpus.val[:20000].tolist())
    assert trained.encode(code).numel() < len(code) / 2  # subwords, not bytes


def test_deterministic_and_read_back(corpus, trained, tmp_path):
    again = train_tokenizer(corpus, 1000, tmp_path)  # a folder gets a tokenizer.json
    assert (tmp_path / "tokenizer.json").read_bytes() == trained.path.read_bytes()
    assert again.identity == trained.identity and trained.identity.startswith("hf:tokenizer.json:sha256:")
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # no temporary file left behind
    assert load_tokenizer(trained.path).identity == trained.identity


def test_corpus_encodes_with_it_as_file_by_file(tmp_path):
    for i in range(60):
        (tmp_path / f"f{i:02d}.py").write_text(f"def f{i}(x):\n    return x * {i}  # é\n" * (i + 1))
    data = tmp_path / "data"
    data.mkdir()
    for p in list(tmp_path.glob("*.py")):
        p.rename(data / p.name)
    tok = train_tokenizer(load_corpus(data, test_fraction=0.1), 400, tmp_path / "t.json")
    c = load_corpus(data, tok, test_fraction=0.1)
    assert c.tokenizer == tok.identity and c.test_files
    expected = torch.cat([tok.encode((data / rel).read_bytes()) for rel in c.files if rel in c.test_files])
    assert torch.equal(c.tokens("test"), expected)


def test_learns_from_the_train_split_only(tmp_path):
    names = [f"f{i:03d}.txt" for i in range(100)]
    for name in names:
        held_out = file_split(name, 0.1, 0.1) != "train"
        (tmp_path / name).write_text(("qzxv " if held_out else "the cat ") * 200)
    tok = train_tokenizer(load_corpus(tmp_path, test_fraction=0.1), 300, tmp_path.parent / "t.json")
    assert tok.encode(b" cat").numel() == 1
    assert tok.encode(b" qzxv").numel() > 1


@pytest.mark.parametrize("bad", [100, 255, 0, -5, 2**21, 1000.0, True, "8192"])
def test_bad_vocab_sizes_are_one_line_errors(corpus, tmp_path, bad):
    with pytest.raises(ValueError, match=rf"vocab_size must be an integer in \[256, 1048576\].*got {bad!r}$"):
        train_tokenizer(corpus, bad, tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()


def test_needs_bytes_and_text(tmp_path, trained):
    (tmp_path / "a.txt").write_text("the cat sat\n" * 50)
    with pytest.raises(ValueError, match="needs a corpus read as bytes"):
        train_tokenizer(load_corpus(tmp_path, trained), 300, tmp_path / "t.json")
    (tmp_path / "b.txt").write_text("")
    with pytest.raises(ValueError, match="no text to train a tokenizer on in 1 files"):
        train_tokenizer([tmp_path / "b.txt"], 300, tmp_path / "t.json")


def test_max_bytes_samples_whole_files_by_seed(corpus, tmp_path):
    a = train_tokenizer(corpus, 600, tmp_path / "a.json", max_bytes=60_000, seed=0)
    b = train_tokenizer(corpus, 600, tmp_path / "b.json", max_bytes=60_000, seed=1)
    c = train_tokenizer(corpus, 600, tmp_path / "c.json", max_bytes=60_000, seed=0)
    assert a.path.read_bytes() == c.path.read_bytes() != b.path.read_bytes()
