"""Result files: versioned JSON with the environment that produced it, written atomically.

Every result perfmamba writes (profile, benchmark, pruning report, comparison) goes through `write_json`, so a
crash mid-write never leaves a truncated file where a good one stood, and `read_json` turns a corrupt or
foreign file into an error that names the file and the problem.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from perfmamba.outputs import file_mode

SCHEMA_VERSION = 1


class ResultsFileError(ValueError):
    """A result file is missing, corrupt, or not of the expected kind."""


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())  # mkstemp's 0600 would hide a shared result from other users
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, payload: dict[str, Any], *, kind: str) -> Path:
    """Write a result file: `payload` plus schema_version, kind and environment (unless already present)."""
    doc = {"schema_version": SCHEMA_VERSION, "kind": kind, "environment": environment()}
    doc.update(payload)
    return atomic_write_text(path, json.dumps(doc, indent=2, default=_jsonable) + "\n")


def read_json(path: str | os.PathLike, *, kind: str | None = None) -> dict[str, Any]:
    """Read a result file written by `write_json`; raise ResultsFileError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ResultsFileError(f"{path}: no such result file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsFileError(f"{path}: corrupt result file (not valid JSON: {e})") from e
    if not isinstance(doc, dict):
        raise ResultsFileError(f"{path}: corrupt result file (top level is {type(doc).__name__}, not an object)")
    if kind is not None:
        if doc.get("kind") != kind:
            raise ResultsFileError(f"{path}: expected a {kind!r} result file, found kind={doc.get('kind')!r}")
        version = doc.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ResultsFileError(
                f"{path}: unsupported schema_version {version!r} (this perfmamba reads <= {SCHEMA_VERSION})"
            )
    return doc


def parse_toml(text: str) -> dict[str, Any]:
    """TOML text as a dict: tomllib (Python >= 3.11) or the tomli package. Raises ValueError when the text is not
    valid TOML, or when neither parser is installed."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ValueError("reading TOML needs Python >= 3.11 (tomllib) or the tomli package") from None
    return tomllib.loads(text)  # TOMLDecodeError is a ValueError


def _git_tree(cwd: Path) -> tuple[str | None, bool | None]:
    """(HEAD's commit, whether tracked files differ from it) of the git checkout holding `cwd`; (None, None) where
    git cannot tell."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5,
                                  check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return None

    head = git("rev-parse", "HEAD")
    if not head or not head.strip():
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return head.strip(), None if status is None else bool(status.strip())


@functools.lru_cache(maxsize=1)
def _checkout() -> tuple[str | None, bool | None]:
    """`_git_tree` of the perfmamba checkout, asked of git once a process."""
    return _git_tree(Path(__file__).resolve().parent)


def git_commit() -> str | None:
    """The commit of the perfmamba checkout: $PERFMAMBA_GIT_COMMIT (for copies of a tree without .git), else
    `git rev-parse HEAD`, else None."""
    return os.environ.get("PERFMAMBA_GIT_COMMIT") or _checkout()[0]


def git_dirty() -> bool | None:
    """Whether the checkout's tracked files differ from `git_commit()`: a result measured on uncommitted code, or on
    a copy of a newer tree over older git metadata, says so. None where git cannot tell or the commit was given by
    $PERFMAMBA_GIT_COMMIT."""
    return None if os.environ.get("PERFMAMBA_GIT_COMMIT") else _checkout()[1]


def environment() -> dict[str, Any]:
    """Device, library versions and commit: what a reader needs to know where a number came from."""
    import numpy
    import torch

    from perfmamba._version import __version__
    from perfmamba.ops import backend_status

    env: dict[str, Any] = {
        "perfmamba": __version__,
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "machine": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cuda": torch.version.cuda,
        "gpu": None,
        "backends": backend_status(),
    }
    if torch.cuda.is_available():
        env.update(gpu_identity(torch.cuda.current_device()))
    for mod in ("mamba_ssm", "causal_conv1d", "triton"):
        env[mod] = _module_version(mod)
    return env


def gpu_identity(index: int) -> dict[str, Any]:
    """The name, index and UUID of CUDA device `index`: timings from two GPUs of one host are not interchangeable,
    so every result says which one it came from (the UUID survives renumbering by CUDA_VISIBLE_DEVICES)."""
    import torch

    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    return {"gpu": props.name, "gpu_index": index, "gpu_uuid": f"GPU-{uuid}" if uuid is not None else None}


def _module_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None
