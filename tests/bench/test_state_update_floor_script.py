"""benchmarks/state_update_floor.py --quick: the floor study (flat span, the decode kernel's tiling, the kernel)
run on the CPU through Triton's interpreter, in a subprocess (the interpreter is chosen before triton is imported)."""

from __future__ import annotations

import pytest
from bench_scripts import load_script, run_quick

pytest.importorskip("triton")


def test_quick_run_times_every_way_on_checked_arithmetic(tmp_path):
    run, doc = run_quick("state_update_floor", tmp_path, "state_floor.json")
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
    with pytest.raises(SystemExit, match="--dstates takes positive N' separated by commas"):
        load_script("state_update_floor").parse_args(["--quick", "--out", str(tmp_path), "--dstates", value])


@pytest.mark.parametrize("flags", [["--dstates", "20,12"], ["--dstates=20,12"]])
def test_given_dstates_hold_in_the_quick_run_too(flags, tmp_path):
    script = load_script("state_update_floor")
    assert script.parse_args(["--quick", "--out", str(tmp_path)]).dstates == (34, 13)
    assert script.parse_args(["--quick", "--out", str(tmp_path), *flags]).dstates == (20, 12)
