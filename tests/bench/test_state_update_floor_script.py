"""benchmarks/state_update_floor.py --quick: the floor study (flat span, the decode kernel's tiling, the kernel)
run on the CPU through Triton's interpreter, in a subprocess (the interpreter is chosen before triton is imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "state_update_floor.py"


def test_quick_run_times_every_way_on_checked_arithmetic(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    doc = json.loads((tmp_path / "state_floor.json").read_text())
    assert doc["kind"] == "state_update_floor" and "git_commit" in doc["environment"]
    rows = {r["dstate"]: r for r in doc["rows"]}
    assert set(rows) == {34, 13} and all(r["shape"] == "tiny" for r in rows.values())
    # N' = 34 in fp32 takes rows in pairs (the tile RMW walks runs of 68), 13 does not
    assert rows[34]["config"][3] == 1 and rows[13]["config"][3] == 0
    for r in rows.values():
        assert r["rmw_agrees"] == {"span": True, "tile": True}
        assert all(r[k]["median_s"] > 0 and r[k]["bandwidth_Bps"] > 0 for k in ("span", "tile", "kernel"))
        assert r["widest"] == 34
    assert rows[34]["vs_widest"] == {"span": 1.0, "tile": 1.0, "kernel": 1.0}
    assert "| tiny | 13 | 0.382 |" in run.stdout


@pytest.mark.parametrize("value", ["x", "64,0", ""])
def test_bad_dstates_are_refused(value, tmp_path):
    from bench_scripts import load_script

    with pytest.raises(SystemExit):
        load_script("state_update_floor").parse_args(["--quick", "--out", str(tmp_path), "--dstates", value])
