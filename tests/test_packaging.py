"""What an install from the source distribution carries: the files perfmamba reads at run time besides its code.

pip and tox build the wheel from the sdist, so a data file missing from either is missing from every install that
is not an editable checkout (the benchmarks then stop at "no such thresholds file")."""

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_FILES = ("perfmamba/bench/thresholds.toml",)

BUILD = "import sys; from setuptools import build_meta as b; print(getattr(b, sys.argv[1])(sys.argv[2]))"


def _build(kind: str, source: Path, out: Path) -> Path:
    done = subprocess.run([sys.executable, "-c", BUILD, kind, str(out)], cwd=source, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out / done.stdout.strip().splitlines()[-1]


def _checkout_copy(dest: Path) -> Path:
    """The tracked files only: a build in the checkout itself would reuse its editable install's egg-info."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def test_sdist_and_the_wheel_built_from_it_carry_the_data_files(tmp_path):
    pytest.importorskip("setuptools.build_meta")
    source = _checkout_copy(tmp_path / "checkout")
    sdist = _build("build_sdist", source, tmp_path)
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        for data in DATA_FILES:
            assert any(n.endswith(data) for n in names), f"{data} is not in the sdist"
        tar.extractall(tmp_path / "src", filter="data")
    (unpacked,) = (tmp_path / "src").iterdir()
    wheel = _build("build_wheel", unpacked, tmp_path)
    with zipfile.ZipFile(wheel) as whl:
        for data in DATA_FILES:
            assert data in whl.namelist(), f"{data} is not in the wheel"
