"""Which files make up a corpus: the stdlib's source, a user's folder, or all the local text ("local").

Each source is a list of (name, path) pairs in reading order. The name is what the split hashes and the corpus
hash covers, so it is relative and the same on every machine that has the same file (`abc.py`,
`stdlib/abc.py`, `site-packages/numpy/linalg/linalg.py`); the path is where this machine keeps it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import site
import sysconfig
from pathlib import Path

STDLIB = "stdlib"
LOCAL = "local"
# Folders left out of the stdlib corpus: tests (huge, repetitive, and not shipped by every distribution),
# third-party packages (differ per machine), the IDE and demos, vendored wheels, codec tables and the
# generated pydoc topics (data rather than code).
_STDLIB_EXCLUDED_DIRS = frozenset({
    "test", "tests", "idle_test", "idlelib", "site-packages", "dist-packages", "turtledemo", "__pycache__",
    "ensurepip", "lib2to3", "encodings", "pydoc_data",
})
# _sysconfigdata_* holds the build configuration of this particular interpreter, not shared source.
_STDLIB_EXCLUDED_PREFIXES = ("test_", "_sysconfigdata")
# The local corpus takes source and prose from installed packages; their tests (as the stdlib's) and package
# metadata (licenses, file lists) are left out.
LOCAL_SUFFIXES = (".py", ".pyi", ".md", ".rst", ".txt")
_LOCAL_EXCLUDED_DIRS = frozenset({"test", "tests", "__pycache__"})
_METADATA_DIR_SUFFIXES = (".dist-info", ".egg-info")


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_name() -> str:
    # The stdlib changes between Python releases, so the version is part of the corpus's name.
    return f"python{platform.python_version()}-{STDLIB}"


def local_name() -> str:
    # Only a name: which packages were read is in the corpus's file list and hash, never assumed from this.
    return f"python{platform.python_version()}-{LOCAL}"


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


def files_under(root: Path) -> list[str]:
    """Every regular, non-hidden file under `root`, as sorted relative POSIX paths."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                out.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(out)


def site_packages_roots() -> list[Path]:
    """The running interpreter's package folders (a venv's own, or the system's), existing ones, first wins."""
    seen: list[Path] = []
    paths = sysconfig.get_paths()
    for p in (paths["purelib"], paths["platlib"], *site.getsitepackages()):
        p = Path(p)
        if p.is_dir() and p.resolve() not in {q.resolve() for q in seen}:
            seen.append(p)
    return seen


def _package_files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _LOCAL_EXCLUDED_DIRS
                       and not d.endswith(_METADATA_DIR_SUFFIXES)]
        for name in filenames:
            if name.endswith(LOCAL_SUFFIXES) and not name.startswith((".", "test_")):
                out.append((Path(dirpath) / name).relative_to(root).as_posix())
    return out


def order_key(name: str) -> bytes:
    """The local corpus's reading order: a hash of the name, salted so that it is independent of the split's
    hash (else the first files read would all be validation files). A byte budget then takes an even sample of
    every package rather than the alphabetically first ones, and a larger budget reads a superset."""
    return hashlib.sha256(b"order\0" + name.encode("utf-8")).digest()


def local_sources(
    stdlib: str | os.PathLike | None = None, site_packages: list[str | os.PathLike] | None = None
) -> list[tuple[str, Path]]:
    """The local corpus's files: the stdlib corpus's under "stdlib/", and every installed package's .py, .pyi,
    .md, .rst and .txt files under "site-packages/" (tests and metadata aside), in `order_key` order. A name
    found in two package folders is read from the first, as Python would import it."""
    root = Path(stdlib) if stdlib is not None else stdlib_root()
    found = {f"{STDLIB}/{rel}": root / rel for rel in stdlib_files(root)}
    roots = [Path(p) for p in site_packages] if site_packages is not None else site_packages_roots()
    for sp in roots:
        for rel in _package_files(sp):
            found.setdefault(f"site-packages/{rel}", sp / rel)
    return sorted(found.items(), key=lambda item: order_key(item[0]))


def local_roots() -> list[Path]:
    """The folders the local corpus reads: the stdlib's and the package folders."""
    return [stdlib_root(), *site_packages_roots()]
