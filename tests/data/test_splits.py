"""The test split, and the local corpus (the stdlib's source and the installed packages' text)."""

import hashlib

import pytest
import torch

from perfmamba.data.corpus import LOCAL_MAX_FILE_BYTES, _read, file_split, is_val_file, load_corpus
from perfmamba.data.sources import local_sources, order_key


def _folder(tmp_path, n=200):
    files = {f"d{i % 4}/f{i:03d}.txt": f"file {i} says " + "word " * (i % 17 + 1) + "\n" for i in range(n)}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text(text)
    return files


def test_three_splits_are_disjoint_whole_files_and_deterministic(tmp_path):
    files = _folder(tmp_path)
    c = load_corpus(tmp_path, test_fraction=0.1)
    val, test = set(c.val_files), set(c.test_files)
    assert val and test and not val & test and (val | test) < set(c.files)
    assert all(file_split(rel, 0.1, 0.1) == "test" for rel in test)
    for split, chosen in (("val", val), ("test", test), ("train", set(files) - val - test)):
        text = "".join(files[rel] for rel in c.files if rel in chosen)
        assert bytes(c.tokens(split).tolist()).decode() == text, split
    assert bytes(c.tokens("all").tolist()).decode() == "".join(files[rel] for rel in sorted(files))
    again = load_corpus(tmp_path, test_fraction=0.1)
    assert again.sha256 == c.sha256 and again.test_files == c.test_files and torch.equal(again.test, c.test)
    # asking for a test split takes it out of train only: validation is the same files as without one
    plain = load_corpus(tmp_path)
    assert plain.val_files == c.val_files and torch.equal(plain.val, c.val)
    assert plain.test_files == () and plain.describe()["test_tokens"] == 0
    with pytest.raises(ValueError, match=r"one of \('train', 'val', 'all'\), got 'test' \(this corpus has no test"):
        plain.tokens("test")


def test_the_hash_covers_contents_and_where_files_went(tmp_path):
    _folder(tmp_path)
    shas = {load_corpus(tmp_path, test_fraction=f).sha256 for f in (0.0, 0.1, 0.2)}
    shas.add(load_corpus(tmp_path, val_fraction=0.2).sha256)
    assert len(shas) == 4
    before = load_corpus(tmp_path, test_fraction=0.1).sha256
    (tmp_path / "d0/f000.txt").write_text("changed\n")
    assert load_corpus(tmp_path, test_fraction=0.1).sha256 != before


def test_test_band_sits_above_validation():
    names = [f"pkg/module_{i}.py" for i in range(4000)]
    where = [file_split(n, 0.1, 0.15) for n in names]
    assert [w == "val" for w in where] == [is_val_file(n) for n in names]
    assert 0.12 < where.count("test") / len(names) < 0.18
    assert all(file_split(n) != "test" for n in names)


def test_few_files_split_by_position_into_three(tmp_path):
    texts = {f"f{i}.txt": f"<{i}>" + "abcdefghij" * 20 + f"</{i}>\n" for i in range(2)}
    for rel, text in texts.items():
        (tmp_path / rel).write_text(text)
    c = load_corpus(tmp_path, test_fraction=0.2)
    assert c.val_files == c.test_files == ()
    n = sum(len(t) for t in texts.values())
    assert c.test.numel() == sum(round(len(t) * 0.2) for t in texts.values())
    assert c.train.numel() + c.val.numel() + c.test.numel() == n
    assert bytes(c.tokens("all").tolist()).decode() == "".join(texts.values())
    assert bytes(c.test[-len("</1>\n"):].tolist()) == b"</1>\n"  # each file's tail is test


@pytest.fixture(scope="module")
def local():
    return load_corpus("local", max_bytes=1_500_000)


def test_local_corpus_respects_its_budget_and_order(local):
    assert local.name.endswith("-local") and local.test_fraction == 0.1
    assert 1_000_000 < local.n_bytes <= 1_500_000
    assert local.train.numel() + local.val.numel() + local.test.numel() == local.n_bytes
    assert list(local.files) == sorted(local.files, key=order_key)
    assert all(rel.startswith(("stdlib/", "site-packages/")) for rel in local.files)
    assert local.val_files and local.test_files
    smaller = load_corpus("local", max_bytes=500_000)
    assert smaller.n_bytes <= 500_000 and local.files[: len(smaller.files)] == smaller.files
    assert smaller.sha256 != local.sha256


def test_local_sources_leave_out_tests_and_metadata(tmp_path):
    std, sp = tmp_path / "std", tmp_path / "sp"
    for rel in ("os.py", "test/test_os.py", "json/__init__.py"):
        (std / rel).parent.mkdir(parents=True, exist_ok=True)
        (std / rel).write_text("x = 1\n")
    for rel in ("pkg/a.py", "pkg/README.md", "pkg/tests/t.py", "pkg/test_b.py", "pkg/data.bin",
                "pkg-1.0.dist-info/LICENSE.txt", "pkg/__pycache__/a.py", "pkg/copy.py", "pkg/latin.txt"):
        (sp / rel).parent.mkdir(parents=True, exist_ok=True)
        (sp / rel).write_text(f"content of {rel}\n")
    names = [name for name, _ in local_sources(std, [sp])]
    assert sorted(names) == ["site-packages/pkg/README.md", "site-packages/pkg/a.py", "site-packages/pkg/copy.py",
                             "site-packages/pkg/latin.txt", "stdlib/json/__init__.py", "stdlib/os.py"]
    # reading skips a second copy of the same bytes, non-UTF-8 text, empty and oversized files
    (sp / "pkg/copy.py").write_text("content of pkg/a.py\n")
    (sp / "pkg/latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (std / "json/__init__.py").write_text("")
    (sp / "pkg/README.md").write_text("x" * (LOCAL_MAX_FILE_BYTES + 1))
    contents, _ = _read(sorted(local_sources(std, [sp])), None, curate=True)
    assert [rel for rel, _, _ in contents] == ["site-packages/pkg/a.py", "stdlib/os.py"]


def test_local_files_are_distinct(local):
    texts = [local.tokens(split)[start:start + n] for split, start, n in local.segments]
    assert len(texts) == len(local.files)
    assert len({hashlib.sha256(bytes(t.tolist())).hexdigest() for t in texts}) == len(texts)
