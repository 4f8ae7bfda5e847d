"""benchmarks/state_update_kernels.py --quick: the GPU script's every section, run on the CPU through Triton's
interpreter at tiny sizes, so that the script cannot rot between GPU runs. A subprocess: the interpreter must be
chosen before the process first imports triton."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "state_update_kernels.py"


def test_quick_run_writes_every_section(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    doc = json.loads((tmp_path / "state_update.json").read_text())
    assert doc["kind"] == "state_update_kernels" and "git_commit" in doc["environment"]
    assert doc["copy"]["bandwidth_Bps"] > 0
    assert [(r["shape"], r["dstate"]) for r in doc["kernel"]] == [("tiny", 24), ("tiny", 13), ("mamba1-130m", 5)]
    assert all(r["triton"]["median_s"] > 0 and r["speedup"] > 0 and r["outputs_agree"] for r in doc["kernel"])
    assert {(r["variant"], r["backend"]) for r in doc["model"]} == {
        (v, b) for v in ("dense N=32", "uniform N'=20", "global r=0.5") for b in ("reference", "triton", "fastest")}
    uniform = next(r for r in doc["model"] if r["variant"] == "uniform N'=20")
    assert set(uniform["d_states"]) == {20}
    assert [(r["dstate"], r["padded_to"]) for r in doc["ssd"]] == [(24, 24), (24, 32), (16, 16)]
    assert doc["fastest_choices"] and set(doc["fastest_choices"].values()) <= {"reference", "triton"}
    assert "| tiny | 24 |" in run.stdout and "### Prefill scan" in run.stdout
