"""The README's Python examples run as written (on the CPU, with the cached trained tiny model)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    # The examples build on each other (the ops example uses the first one's torch import), as a reader would
    # paste them into one session.
    for block in BLOCKS[: index + 1]:
        exec(compile(block.replace('"/tmp/tiny"', repr(str(tmp_path / "tiny"))), str(README), "exec"), namespace)
