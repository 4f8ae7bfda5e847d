"""Where results go: checked before any work starts, and a directory written whole or not at all.

A command that runs for minutes and then fails to write, or is interrupted while writing, must not lose the
work or leave a folder that mixes two models. So an output location is checked first (`check_file`,
`check_directory`), and a directory is filled in a sibling temporary folder, synced, and swapped in by rename
under a lock (`replacing_directory`). Files get the mode the umask gives, as any other file would.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


class OutputError(ValueError):
    """An output location that cannot or must not be written; the message names it."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from the umask (mkstemp's 0600 would hide shared results from other users)."""
    return 0o666 & ~_umask()


def _probe(folder: Path, what: Path) -> None:
    """Create and remove a file in `folder`: the only reliable test (read-only mounts, ACLs, root)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".perfmamba-probe.", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise OutputError(f"{what}: cannot write in {folder} ({e.strerror or e})") from None


def _existing_ancestor(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{path}: {parent} is a file, not a folder")
            return parent
    return Path.cwd()


def check_file(path: str | os.PathLike) -> Path:
    """Fail now, in one line, if file `path` could not be written later."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name")
    _probe(_existing_ancestor(path.parent), path)
    return path


def check_directory(path: str | os.PathLike, *, force: bool = False,
                    reusable: Callable[[Path], bool] | None = None) -> Path:
    """Fail now, in one line, if folder `path` could not be written later, or if it holds something the user did
    not ask to replace: anything, unless `force` or `reusable(path)` (e.g. an unfinished run to resume)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not force and not (reusable and reusable(path)):
        held = ", ".join(sorted(p.name for p in path.iterdir())[:4])
        raise OutputError(f"{path}: not empty (holds {held}); pass --force to replace it, or choose another --out")
    _probe(_existing_ancestor(path.parent), path)
    return path


@contextlib.contextmanager
def locked(target: str | os.PathLike, *, wait: bool = False) -> Iterator[None]:
    """An exclusive lock on `target` (a sibling `.NAME.lock` file): a second holder fails at once, or, with
    `wait`, waits its turn. (A lock is per open file: one process cannot take it twice either.)"""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{target.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"{target}: another process is writing it; wait for it or choose another --out") from None
        try:  # the holder before us may have unlinked the file we opened: lock the one on disk
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a job scheduler stopping us) raises KeyboardInterrupt, as Ctrl-C does, so that cleanup runs: a
    staging folder is removed, a training run saves its steps. Only the main thread can set a handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap(new: Path, target: Path) -> None:
    """Put `new` where `target` is, with Ctrl-C and SIGTERM held back for the two renames (delivered after)."""
    old = target.parent / f".{target.name}.{os.getpid()}.old"
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        if target.exists():
            os.rename(target, old)
        os.rename(new, target)
        _fsync_dir(target.parent)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    shutil.rmtree(old, ignore_errors=True)


def _recover(target: Path) -> None:
    """Under the lock, undo what a killed writer (SIGKILL, power loss) left: its staging folder, and, if it died
    between the two renames of `_swap`, the old content set aside (put back)."""
    name = re.escape(f".{target.name}.")
    for entry in sorted(target.parent.iterdir()):
        if re.fullmatch(name + r"\d+\.old", entry.name):
            if not target.exists():
                os.rename(entry, target)
            else:
                shutil.rmtree(entry, ignore_errors=True)
        elif re.fullmatch(name + r"staging-\w+\.tmp", entry.name):
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def replacing_directory(target: str | os.PathLike, *, force: bool = False,
                        reusable: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target` to fill; when the block ends, sync it and swap it in for
    `target` whole. If the block raises (KeyboardInterrupt included) `target` stays as it was. `force` and
    `reusable` are `check_directory`'s, checked again under the lock."""
    target = Path(target)
    with locked(target):
        _recover(target)
        check_directory(target, force=force, reusable=reusable)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", suffix=".tmp", dir=target.parent))
        try:
            staging.chmod(0o777 & ~_umask())
            yield staging
            _fsync_tree(staging)
            _swap(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
