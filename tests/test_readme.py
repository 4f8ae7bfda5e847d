"""The README's commands and Python examples work as written (on the CPU, with the cached trained tiny model)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_TEXT = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README_TEXT, flags=re.S)
EXTRAS = r'pip install (?:-q )?-e "\.\[([\w,]+)\]"'


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_each_readme_example_runs_on_its_own(index, tmp_path, monkeypatch):
    # A reader pastes one example, not all of those above it: each gets a namespace of its own.
    monkeypatch.chdir(tmp_path)
    code = BLOCKS[index].replace('"/tmp/tiny"', repr(str(tmp_path / "tiny")))
    exec(compile(code, f"README.md, Python example {index + 1}", "exec"), {"__name__": "__readme__"})


def test_the_readme_test_command_installs_and_runs_what_ci_does():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    [ci_extras] = re.findall(EXTRAS, ci)
    assert re.search(r"-m pytest -q\n", ci)
    [command] = [line for line in README_TEXT.splitlines() if "pip install" in line and "pytest" in line]
    assert "python -m pytest -q" in command
    # Every install of the test extra, the GPU one too: a missing extra skips tests that CI runs (hf: 5 of them).
    installs = [extras for extras in re.findall(EXTRAS, README_TEXT) if "test" in extras.split(",")]
    assert re.findall(EXTRAS, command) == [ci_extras] and len(installs) >= 2
    assert all(set(extras.split(",")) >= set(ci_extras.split(",")) for extras in installs), (installs, ci_extras)


def test_training_for_the_tests_is_announced_even_under_q(tmp_path):
    """The first run of the test command trains models into the cache for minutes; the tests' conftest says what,
    where and how far along, past pytest's capture, instead of leaving a newcomer at a silent terminal."""
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_cold_cache.py").write_text(
        "from perfmamba.eval.cache import trained_model_dir\n\n"
        "def test_trains_into_the_cache():\n"
        "    trained_model_dir('mamba1-tiny', steps=3, batch_size=2, seq_len=32, warmup_steps=1, eval_tokens=256,\n"
        "                      eval_seq_len=64)\n"
    )
    cache = tmp_path / "cache"
    env = {**os.environ, "PERFMAMBA_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_cold_cache.py"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    [model] = [path for path in (cache / "models").glob("mamba1-tiny-3steps-*") if path.is_dir()]
    assert re.search(r"perfmamba: training mamba1-tiny \(3 steps on \w+\)", run.stdout), run.stdout
    assert f"kept in {model} ($PERFMAMBA_CACHE" in run.stdout
    progress = r"mamba1-tiny: step 3/3, loss \d+\.\d\d, \d+\.\d\d s/step, scoring 256 held-out tokens"
    assert re.search(progress, run.stdout), run.stdout
    assert "perfmamba: mamba1-tiny trained in" in run.stdout
    # Trained once: the second run finds it in the cache and says nothing.
    again = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_cold_cache.py"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "training" not in again.stdout, again.stdout
