"""Corpora: a local text file or folder, or by default the Python standard library's own source files.

The default corpus is real text that every machine already has with no download: the `.py` files of the
running interpreter's standard library, minus tests, vendored packages and generated tables, in sorted order of
their relative paths. Machines with the same Python version read the same files; `Corpus.sha256` names the
exact bytes read (file names and contents), so a result never depends on an unnamed variant of the data.

Splits are by file (a hash of the relative path decides), so no line of validation text was seen in training.
A corpus of a single file is split by position instead: its last `val_fraction` of bytes are validation.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from perfmamba.checks import check_at_least, check_in_range
from perfmamba.data.tokenizer import Tokenizer, load_tokenizer

STDLIB = "stdlib"
# Whole files are taken in sorted order up to this many bytes: enough for minutes of CPU training and a
# validation split of a few hundred kB, while reading and hashing stay well under a second.
STDLIB_MAX_BYTES = 4 * 1024 * 1024
VAL_FRACTION = 0.1
# Folders left out of the stdlib corpus: tests (huge, repetitive, and not shipped by every distribution),
# third-party packages (differ per machine), the IDE and demos, vendored wheels, codec tables and the
# generated pydoc topics (data rather than code).
_STDLIB_EXCLUDED_DIRS = frozenset({
    "test", "tests", "idle_test", "idlelib", "site-packages", "dist-packages", "turtledemo", "__pycache__",
    "ensurepip", "lib2to3", "encodings", "pydoc_data",
})
# _sysconfigdata_* holds the build configuration of this particular interpreter, not shared source.
_STDLIB_EXCLUDED_PREFIXES = ("test_", "_sysconfigdata")
SPLITS = ("train", "val", "all")


@dataclass(frozen=True)
class Corpus:
    """Text files read in a fixed order, their content hash, and their tokens split into train and validation.

    `name` says where the text came from ("python3.11.7-stdlib" or the path given); `id` adds the content hash,
    which is what a result should cite. `files` are relative paths; `val_files` those in the validation split
    (empty when a single file was split by position).
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
    # Every file's tokens in file order, as (split, offset, length) slices of `train` / `val`: what "all" joins,
    # so that each file's text stays whole (a position split puts a file's head in train and its tail in val).
    segments: tuple[tuple[str, int, int], ...] = ()

    @property
    def id(self) -> str:
        return f"{self.name}@sha256:{self.sha256[:16]}"

    def tokens(self, split: str = "val") -> Tensor:
        if split == "train":
            return self.train
        if split == "val":
            return self.val
        if split == "all":
            if not self.segments:
                return torch.cat([self.train, self.val])
            parts = {"train": self.train, "val": self.val}
            return torch.cat([parts[name][start:start + n] for name, start, n in self.segments])
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")

    def describe(self) -> dict:
        """What a result file records about the data (everything but the tokens)."""
        return {
            "id": self.id, "name": self.name, "root": self.root, "sha256": self.sha256, "n_files": len(self.files),
            "n_val_files": len(self.val_files), "n_bytes": self.n_bytes, "tokenizer": self.tokenizer,
            "train_tokens": int(self.train.numel()), "val_tokens": int(self.val.numel()),
        }


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_name() -> str:
    # The stdlib changes between Python releases, so the version is part of the corpus's name.
    return f"python{platform.python_version()}-{STDLIB}"


def stdlib_files(root: str | os.PathLike | None = None) -> list[str]:
    """Relative POSIX paths of the stdlib's source files that make up the default corpus, sorted."""
    root = Path(root) if root is not None else stdlib_root()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning the walk skips site-packages without listing it (tens of thousands of files on a dev box).
        dirnames[:] = [d for d in dirnames if d not in _STDLIB_EXCLUDED_DIRS and not d.startswith("config-")]
        for name in filenames:
            if name.endswith(".py") and not name.startswith(_STDLIB_EXCLUDED_PREFIXES):
                out.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(out)


def _files_under(root: Path) -> list[str]:
    """Every regular, non-hidden file under `root`, as sorted relative POSIX paths."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                out.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(out)


def is_val_file(rel_path: str, val_fraction: float = VAL_FRACTION) -> bool:
    """The file-level split: a hash of the relative path, so it is the same on every machine and run and a
    file's split does not change when other files are added or removed."""
    digest = hashlib.sha256(rel_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def _read(root: Path, files: Iterable[str], max_bytes: int | None) -> tuple[list[tuple[str, bytes]], str]:
    """Read whole files in order until `max_bytes`; returns them and the sha256 of their names and contents."""
    h = hashlib.sha256()
    out: list[tuple[str, bytes]] = []
    total = 0
    for rel in files:
        data = (root / rel).read_bytes() if rel else root.read_bytes()
        if max_bytes is not None and out and total + len(data) > max_bytes:
            break
        # Name and length delimit each file, so moving bytes between files changes the hash.
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
        out.append((rel, data))
        total += len(data)
    return out, h.hexdigest()


def load_corpus(
    path: str | os.PathLike | None = None,
    tokenizer: Tokenizer | str | os.PathLike | None = None,
    *,
    max_bytes: int | None = None,
    val_fraction: float = VAL_FRACTION,
) -> Corpus:
    """Read and tokenize a corpus: a text file, a folder of text files, or (path None) the stdlib's source.

    `max_bytes` caps how much is read (whole files, in order; default: STDLIB_MAX_BYTES for the stdlib corpus,
    everything for a path given). Raises FileNotFoundError for a missing path, ValueError for an empty corpus.
    """
    check_in_range("val_fraction", val_fraction, 0.0, 1.0, closed="()")
    check_at_least("max_bytes", max_bytes, integer=False, optional=True)
    tok = load_tokenizer(tokenizer)
    if path is None or str(path) == STDLIB:
        root = stdlib_root()
        name = stdlib_name()
        files = stdlib_files(root)
        max_bytes = STDLIB_MAX_BYTES if max_bytes is None else max_bytes
    else:
        root = Path(path).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or directory (expected a text file or a folder of them)")
        name = str(root)
        files = _files_under(root) if root.is_dir() else [""]  # "" stands for the file `root` itself
    contents, sha = _read(root, files, max_bytes)
    n_bytes = sum(len(data) for _, data in contents)
    if n_bytes == 0:
        n = len(contents)
        raise ValueError(f"{root}: the corpus is empty ({n} file{'s' if n != 1 else ''}, 0 bytes)")

    val_files = tuple(rel for rel, _ in contents if is_val_file(rel, val_fraction))
    pieces: dict[str, list[Tensor]] = {"train": [], "val": []}
    offsets = {"train": 0, "val": 0}
    segments: list[tuple[str, int, int]] = []

    def add(split: str, ids: Tensor) -> None:
        segments.append((split, offsets[split], len(ids)))
        offsets[split] += len(ids)
        pieces[split].append(ids)

    if len(contents) > 1 and 0 < len(val_files) < len(contents):
        in_val = set(val_files)
        for rel, data in contents:
            add("val" if rel in in_val else "train", tok.encode(data, str(root / rel)))
    else:
        # Too few files for a file-level split: the last val_fraction of every file's tokens is validation.
        val_files = ()
        for rel, data in contents:
            ids = tok.encode(data, str(root / rel) if rel else str(root))
            cut = len(ids) - max(1, round(len(ids) * val_fraction)) if len(ids) > 1 else len(ids)
            add("train", ids[:cut])
            add("val", ids[cut:])
    empty = torch.empty(0, dtype=torch.long)
    train, val = (torch.cat(pieces[k]) if pieces[k] else empty for k in ("train", "val"))
    return Corpus(
        name=name, root=str(root), files=tuple(rel for rel, _ in contents), val_files=val_files, sha256=sha,
        n_bytes=n_bytes, tokenizer=tok.identity, train=train, val=val, segments=tuple(segments),
    )
