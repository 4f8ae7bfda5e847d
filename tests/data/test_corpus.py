import platform

import pytest
import torch

from perfmamba.data.corpus import STDLIB_MAX_BYTES, is_val_file, load_corpus, stdlib_files, stdlib_root


@pytest.fixture(scope="module")
def stdlib():
    return load_corpus()


def test_stdlib_corpus_is_deterministic(stdlib):
    again = load_corpus()
    assert again.sha256 == stdlib.sha256
    assert again.files == stdlib.files
    assert torch.equal(again.train, stdlib.train) and torch.equal(again.val, stdlib.val)
    assert len(stdlib.sha256) == 64 and stdlib.id.endswith(stdlib.sha256[:16])


def test_stdlib_corpus_names_the_python_version_and_real_source(stdlib):
    assert stdlib.name == f"python{platform.python_version()}-stdlib"
    assert stdlib.tokenizer == "byte"
    assert list(stdlib.files) == sorted(stdlib.files)
    assert "abc.py" in stdlib.files
    text = bytes(stdlib.train[:200_000].tolist()).decode("utf-8", errors="replace")
    assert "def " in text and "import " in text
    # tests, third-party packages and per-build files are not part of it
    for rel in stdlib.files:
        parts = rel.split("/")
        assert not {"test", "tests", "site-packages", "idlelib"} & set(parts[:-1]), rel
        assert not parts[-1].startswith(("test_", "_sysconfigdata")), rel


def test_stdlib_corpus_is_capped_by_whole_files(stdlib):
    assert stdlib.n_bytes <= STDLIB_MAX_BYTES
    listed = stdlib_files()
    assert list(stdlib.files) == listed[: len(stdlib.files)]
    next_size = (stdlib_root() / listed[len(stdlib.files)]).stat().st_size
    assert stdlib.n_bytes + next_size > STDLIB_MAX_BYTES
    assert stdlib.train.numel() + stdlib.val.numel() == stdlib.n_bytes  # bytes are tokens


def test_split_is_by_file_with_no_overlap(stdlib):
    val = set(stdlib.val_files)
    assert val and val < set(stdlib.files)
    assert 0.03 < len(val) / len(stdlib.files) < 0.25
    val_bytes = sum((stdlib_root() / rel).stat().st_size for rel in val)
    assert stdlib.val.numel() == val_bytes
    # the validation tokens are exactly the validation files, in order
    expected = b"".join((stdlib_root() / rel).read_bytes() for rel in stdlib.files if rel in val)
    assert bytes(stdlib.val.to(torch.uint8).tolist()) == expected
    # "all" is every file, whole and in order (train and validation files interleave as the files do)
    everything = b"".join((stdlib_root() / rel).read_bytes() for rel in stdlib.files)
    assert bytes(stdlib.tokens("all").to(torch.uint8).tolist()) == everything


def test_split_depends_only_on_the_path():
    names = [f"pkg/module_{i}.py" for i in range(2000)]
    chosen = [is_val_file(n) for n in names]
    assert chosen == [is_val_file(n) for n in names]
    assert 0.08 < sum(chosen) / len(names) < 0.12
    assert sum(is_val_file(n, 0.5) for n in names) > sum(chosen)


def test_folder_corpus_is_sorted_and_hashed(tmp_path):
    files = {f"d{i % 3}/f{i:02d}.txt": f"text number {i}\n" * (i + 1) for i in range(40)}
    for rel, text in reversed(list(files.items())):  # created in reverse: order must not depend on it
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / ".hidden").write_text("not corpus")
    a = load_corpus(tmp_path)
    assert list(a.files) == sorted(files)
    assert a.n_bytes == sum(len(t) for t in files.values())
    assert a.val_files and not set(a.val_files) - set(a.files)
    assert a.train.numel() + a.val.numel() == a.n_bytes
    (tmp_path / "d0/f00.txt").write_text("changed\n")
    assert load_corpus(tmp_path).sha256 != a.sha256


def test_single_file_is_split_by_position(tmp_path):
    path = tmp_path / "wiki.test.raw"
    data = bytes(range(32, 127)) * 20
    path.write_bytes(data)
    c = load_corpus(path)
    assert c.val_files == ()
    assert c.val.numel() == round(len(data) * 0.1)
    assert bytes(c.train.tolist()) + bytes(c.val.tolist()) == data
    assert c.name == str(path)


@pytest.mark.parametrize("n_files", [3, 40])
def test_all_is_every_file_whole_in_file_order(tmp_path, n_files):
    """"all" (what `evaluate` scores of a user's folder) is the files' text in order, each file whole, whether the
    split was by file (40 files) or by position inside each file (3 files, none drawn for validation)."""
    texts = {f"f{i:02d}.txt": f"<file {i} start> " + "body " * (5 + i) + f"<file {i} end>\n" for i in range(n_files)}
    for rel, text in texts.items():
        (tmp_path / rel).write_text(text)
    c = load_corpus(tmp_path)
    assert bytes(c.tokens("all").tolist()).decode() == "".join(texts[k] for k in sorted(texts))


def test_max_bytes_takes_whole_files(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.txt").write_text("x" * 100)
    assert load_corpus(tmp_path, max_bytes=250).files == ("0.txt", "1.txt")
    assert load_corpus(tmp_path, max_bytes=50).files == ("0.txt",)  # at least one file


def test_missing_and_empty_corpora_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt: no such file or directory"):
        load_corpus(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="the corpus is empty"):
        load_corpus(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="the corpus is empty"):
        load_corpus(tmp_path)
    (tmp_path / "a.txt").write_text("abc")
    with pytest.raises(ValueError, match="split must be one of .*got 'dev'"):
        load_corpus(tmp_path / "a.txt").tokens("dev")
    with pytest.raises(ValueError, match=r"one of \('train', 'val', 'all'\), got 'test' \(this corpus has no test"):
        load_corpus(tmp_path / "a.txt").tokens("test")
    with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 0.9\).* got 0.95"):
        load_corpus(tmp_path, test_fraction=0.95)
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\), got 1.5"):
        load_corpus(tmp_path, val_fraction=1.5)
