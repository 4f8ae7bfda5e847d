"""Where a result came from: the checkout's commit, and whether its tracked files differ from it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from perfmamba import results

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_a_tree_says_its_commit_and_whether_tracked_files_changed(tmp_path):
    assert results._git_tree(tmp_path) == (None, None)  # not a checkout
    _git(tmp_path, "init", "-q")
    assert results._git_tree(tmp_path) == (None, None)  # no commit yet
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert results._git_tree(tmp_path) == (head, False)
    (tmp_path / "new.py").write_text("")  # untracked: not part of what was measured
    assert results._git_tree(tmp_path) == (head, False)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert results._git_tree(tmp_path) == (head, True)


def test_a_given_commit_leaves_dirtiness_unknown(monkeypatch):
    monkeypatch.setenv("PERFMAMBA_GIT_COMMIT", "abc123")
    assert results.git_commit() == "abc123" and results.git_dirty() is None
