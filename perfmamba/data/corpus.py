"""Corpora: a local text file or folder, by default the Python standard library's own source files, or "local":
all the source and prose of the running interpreter's stdlib and installed packages.

The default corpus is real text that every machine already has with no download: the `.py` files of the
running interpreter's standard library, minus tests, vendored packages and generated tables, in sorted order of
their relative paths. Machines with the same Python version read the same files; `Corpus.sha256` names the
exact bytes read (file names and contents), so a result never depends on an unnamed variant of the data. The
"local" corpus (`sources.local_sources`) is larger (hundreds of MB where torch and friends are installed) and
differs between machines by what is installed: its hash, not its name, says which text a model saw.

Splits are by file (a hash of the relative path decides), so no line of held-out text was seen in training.
Validation is the files whose hash falls below `val_fraction`, test (when `test_fraction` > 0) the next band
of `test_fraction`: the three are disjoint, and asking for a test split leaves validation as it was.
A corpus of too few files is split by position instead: the last `test_fraction` of each file's tokens are
test, the `val_fraction` before them validation.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from perfmamba.checks import check_at_least, check_in_range
from perfmamba.data.sources import (
    LOCAL,
    STDLIB,
    files_under,
    local_name,
    local_roots,
    local_sources,
    stdlib_files,
    stdlib_name,
    stdlib_root,
)
from perfmamba.data.tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "LOCAL", "LOCAL_MAX_BYTES", "SPLITS", "STDLIB", "STDLIB_MAX_BYTES", "TEST_FRACTION", "VAL_FRACTION", "Corpus",
    "file_split", "is_val_file", "load_corpus", "stdlib_files", "stdlib_name", "stdlib_root",
]

# Whole files are taken in sorted order up to this many bytes: enough for minutes of CPU training and a
# validation split of a few hundred kB, while reading and hashing stay well under a second.
STDLIB_MAX_BYTES = 4 * 1024 * 1024
# The local corpus's default budget: more than a minutes-long GPU run of a 130m model reads, so that the run
# rarely repeats text, while reading and tokenizing stay a small part of the run.
LOCAL_MAX_BYTES = 512 * 1024 * 1024
# Files larger than this in the local corpus are generated tables and data dumps far more often than prose.
LOCAL_MAX_FILE_BYTES = 1024 * 1024
VAL_FRACTION = 0.1
TEST_FRACTION = 0.1  # the local corpus's default; the others have no test split unless asked
SPLITS = ("train", "val", "test", "all")


def _empty() -> Tensor:
    return torch.empty(0, dtype=torch.long)


@dataclass(frozen=True)
class Corpus:
    """Text files read in a fixed order, their content hash, and their tokens split into train, validation and
    (when asked for) test.

    `name` says where the text came from ("python3.11.7-stdlib" or the path given); `id` adds the content hash,
    which is what a result should cite. `files` are relative paths in reading order; `val_files` and `test_files`
    those in the held-out splits (empty when the files were split by position).
    """

    name: str
    root: str
    files: tuple[str, ...]
    val_files: tuple[str, ...]
    sha256: str
    n_bytes: int
    tokenizer: str
    train: Tensor
    val: Tensor
    # Every file's tokens in file order, as (split, offset, length) slices of `train` / `val` / `test`: what "all"
    # joins, so that each file's text stays whole (a position split cuts a file into train, val and test).
    segments: tuple[tuple[str, int, int], ...] = ()
    test_files: tuple[str, ...] = ()
    test: Tensor = field(default_factory=_empty)
    val_fraction: float = VAL_FRACTION
    test_fraction: float = 0.0

    @property
    def id(self) -> str:
        return f"{self.name}@sha256:{self.sha256[:16]}"

    def tokens(self, split: str = "val") -> Tensor:
        if split not in self.splits:
            why = " (this corpus has no test split: load it with test_fraction > 0)" if split == "test" else ""
            raise ValueError(f"split must be one of {self.splits}, got {split!r}{why}")
        parts = {"train": self.train, "val": self.val, "test": self.test}
        if split != "all":
            return parts[split]
        if not self.segments:
            return torch.cat([self.train, self.val, self.test])
        return torch.cat([parts[name][start:start + n] for name, start, n in self.segments])

    @property
    def splits(self) -> tuple[str, ...]:
        """What `tokens` takes: SPLITS, less "test" when the corpus was loaded without one."""
        return SPLITS if self.test_fraction else tuple(s for s in SPLITS if s != "test")

    def texts(self, split: str = "train") -> list[bytes]:
        """The bytes of each file in `split` (split by position: each file's piece of it), in order, for a corpus
        read as bytes: what a tokenizer is trained on, with the files' boundaries kept."""
        if self.tokenizer != "byte":
            raise ValueError(f"texts() needs a corpus read as bytes (tokenizer 'byte'), got {self.tokenizer!r}")
        source = self.tokens(split)
        return [source[start:start + n].to(torch.uint8).numpy().tobytes()
                for name, start, n in self.segments if name == split and n]

    def describe(self) -> dict:
        """What a result file records about the data (everything but the tokens)."""
        return {
            "id": self.id, "name": self.name, "root": self.root, "sha256": self.sha256, "n_files": len(self.files),
            "n_val_files": len(self.val_files), "n_test_files": len(self.test_files), "n_bytes": self.n_bytes,
            "tokenizer": self.tokenizer, "val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
            "train_tokens": int(self.train.numel()), "val_tokens": int(self.val.numel()),
            "test_tokens": int(self.test.numel()),
        }


def _path_fraction(rel_path: str) -> float:
    digest = hashlib.sha256(rel_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_val_file(rel_path: str, val_fraction: float = VAL_FRACTION) -> bool:
    """The file-level split: a hash of the relative path, so it is the same on every machine and run and a
    file's split does not change when other files are added or removed."""
    return _path_fraction(rel_path) < val_fraction


def file_split(rel_path: str, val_fraction: float = VAL_FRACTION, test_fraction: float = 0.0) -> str:
    """"val" below `val_fraction` (as `is_val_file`), "test" in the band above it, else "train"."""
    u = _path_fraction(rel_path)
    return "val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"


def _read(sources: list[tuple[str, Path]], max_bytes: int | None, *,
          curate: bool = False) -> tuple[list[tuple[str, Path, bytes]], str]:
    """Read whole files in order until `max_bytes`; returns them and the sha256 of their names and contents.

    `curate` (the local corpus) skips what a tokenizer should not learn from or could not read: empty, huge or
    non-UTF-8 files, and a file whose bytes were already read under another name (vendored copies would put
    the same text in train and test)."""
    h = hashlib.sha256()
    out: list[tuple[str, Path, bytes]] = []
    seen: set[bytes] = set()
    total = 0
    for rel, path in sources:
        try:
            data = path.read_bytes()
        except OSError:
            if not curate:
                raise
            continue  # an unreadable package file: the hash names what was read instead
        if curate:
            if not data or len(data) > LOCAL_MAX_FILE_BYTES:
                continue
            digest = hashlib.sha256(data).digest()
            if digest in seen:
                continue
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            seen.add(digest)
        if max_bytes is not None and out and total + len(data) > max_bytes:
            break
        # Name and length delimit each file, so moving bytes between files changes the hash.
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
        out.append((rel, path, data))
        total += len(data)
    return out, h.hexdigest()


def _encode(tok: Tokenizer, items: list[tuple[bytes, str]]) -> list[Tensor]:
    # A subword tokenizer encodes many files at once on every core; hundreds of MB one file at a time would take
    # minutes of a GPU run's budget.
    batch = getattr(tok, "encode_batch", None)
    if batch is not None:
        return batch([data for data, _ in items], [source for _, source in items])
    return [tok.encode(data, source) for data, source in items]


def _position_cuts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Where a file's val and test tokens start when split by position (a lone token stays in train)."""
    if n <= 1:
        return n, n
    n_test = max(1, round(n * test_fraction)) if test_fraction else 0
    n_val = max(1, round(n * val_fraction))
    return max(0, n - n_test - n_val), max(0, n - n_test)


def load_corpus(
    path: str | os.PathLike | None = None,
    tokenizer: Tokenizer | str | os.PathLike | None = None,
    *,
    max_bytes: int | None = None,
    val_fraction: float = VAL_FRACTION,
    test_fraction: float | None = None,
) -> Corpus:
    """Read and tokenize a corpus: a text file, a folder of text files, (path None or "stdlib") the stdlib's
    source, or "local" (the stdlib's source and the installed packages' text, see `sources.local_sources`).

    `max_bytes` caps how much is read (whole files, in order; default: STDLIB_MAX_BYTES for the stdlib corpus,
    LOCAL_MAX_BYTES for the local one, everything for a path given). `test_fraction` (default: TEST_FRACTION for
    "local", else 0) makes a test split. A split other than the default (val 0.1, no test) enters the hash:
    the default one is implied, and left out so that models cached under the old hash keep their key.
    Raises FileNotFoundError for a missing path, ValueError for an empty corpus.
    """
    check_in_range("val_fraction", val_fraction, 0.0, 1.0, closed="()")
    if test_fraction is None:
        test_fraction = TEST_FRACTION if str(path) == LOCAL else 0.0
    check_in_range("test_fraction", test_fraction, 0.0, 1.0 - val_fraction, closed="[)",
                   why=" (1 - val_fraction, so that some text is left for training)")
    check_at_least("max_bytes", max_bytes, integer=False, optional=True)
    tok = load_tokenizer(tokenizer)
    if path is None or str(path) in (STDLIB, LOCAL):
        local = str(path) == LOCAL
        sources = local_sources() if local else [(rel, stdlib_root() / rel) for rel in stdlib_files()]
        root = os.pathsep.join(str(r) for r in local_roots()) if local else str(stdlib_root())
        name = local_name() if local else stdlib_name()
        default_max = LOCAL_MAX_BYTES if local else STDLIB_MAX_BYTES
        contents, sha = _read(sources, default_max if max_bytes is None else max_bytes, curate=local)
    else:
        base = Path(path).expanduser()
        if not base.exists():
            raise FileNotFoundError(f"{base}: no such file or directory (expected a text file or a folder of them)")
        root = name = str(base)
        # "" stands for the file `base` itself
        sources = [(rel, base / rel) for rel in files_under(base)] if base.is_dir() else [("", base)]
        contents, sha = _read(sources, max_bytes)
    n_bytes = sum(len(data) for _, _, data in contents)
    if n_bytes == 0:
        n = len(contents)
        raise ValueError(f"{root}: the corpus is empty ({n} file{'s' if n != 1 else ''}, 0 bytes)")

    where = {rel: file_split(rel, val_fraction, test_fraction) for rel, _, _ in contents}
    held = {s: tuple(rel for rel, _, _ in contents if where[rel] == s) for s in ("val", "test")}
    needed = ("val", "test") if test_fraction else ("val",)
    by_file = (len(contents) > 1 and all(held[s] for s in needed)
               and len(held["val"]) + len(held["test"]) < len(contents))
    if not by_file:
        held = {"val": (), "test": ()}
    if (val_fraction, test_fraction) != (VAL_FRACTION, 0.0):
        sha = hashlib.sha256("\0".join([
            sha, f"val_fraction={val_fraction!r}", f"test_fraction={test_fraction!r}",
            "\n".join(held["val"]), "\n".join(held["test"]),
        ]).encode()).hexdigest()

    pieces: dict[str, list[Tensor]] = {"train": [], "val": [], "test": []}
    offsets = dict.fromkeys(pieces, 0)
    segments: list[tuple[str, int, int]] = []

    def add(split: str, ids: Tensor) -> None:
        segments.append((split, offsets[split], len(ids)))
        offsets[split] += len(ids)
        pieces[split].append(ids)

    encoded = _encode(tok, [(data, str(p)) for _, p, data in contents])
    for (rel, _, _), ids in zip(contents, encoded):
        if by_file:
            add(where[rel], ids)
        else:
            val_at, test_at = _position_cuts(len(ids), val_fraction, test_fraction)
            add("train", ids[:val_at])
            add("val", ids[val_at:test_at])
            if test_fraction:
                add("test", ids[test_at:])
    train, val, test = (torch.cat(pieces[k]) if pieces[k] else _empty() for k in ("train", "val", "test"))
    return Corpus(
        name=name, root=root, files=tuple(rel for rel, _, _ in contents), val_files=held["val"], sha256=sha,
        n_bytes=n_bytes, tokenizer=tok.identity, train=train, val=val, segments=tuple(segments),
        test_files=held["test"], test=test, val_fraction=val_fraction, test_fraction=test_fraction,
    )
