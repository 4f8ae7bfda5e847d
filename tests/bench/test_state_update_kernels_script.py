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
    # the model's call layout (Mamba2Mixer.step): x/B/C views into rows of d_inner + 2N, dt a stride-0 view into
    # rows of 2 d_inner + 2N + nheads (tiny: nheads 2, headdim 8, d_inner 16)
    layout = {(r["dstate"], r["layout"], r["backend"]): r for r in doc["layout"]}
    assert len(layout) == 16 and all(r["median_s"] > 0 for r in layout.values())
    model, untied = layout[(24, "model", "triton")]["strides"], layout[(24, "model untied", "triton")]["strides"]
    assert model["x"] == [64, 8, 1] and model["B"] == [64, 24, 1] and model["dt"] == [82, 1, 0]
    assert model["A"] == [1, 0, 0] and model["D"] == [1, 0] and model["dt_bias"] == [1, 0]
    assert untied["dt"] == [16, 8, 1] and untied["dt_bias"] == [8, 1] and untied["A"] == [192, 24, 1]
    # "plain" ties dt and A per head as the model does; "plain A copied" is the untied run of 2026-12-01
    assert layout[(24, "plain", "triton")]["strides"]["A"] == [1, 0, 0]
    assert layout[(24, "plain A copied", "triton")]["strides"]["A"] == [192, 24, 1]
    assert {(r["dstate"], r["backend"], r["layers"]) for r in doc["chain"]} == {
        (n, b, 2) for n in (24, 13) for b in ("reference", "triton", "triton[8,32,1]", "triton[split]")}
    backends = ("reference", "triton", "fastest", "triton[8,32,1]", "triton[split]", "skip")
    assert {(r["variant"], r["backend"]) for r in doc["model"]} == {
        (v, b) for v in ("dense N=32", "uniform N'=20", "global r=0.5") for b in backends}
    assert all(r["kernel_per_layer_s"] == 0.0 for r in doc["model"] if r["backend"] == "skip")
    uniform = next(r for r in doc["model"] if r["variant"] == "uniform N'=20")
    assert set(uniform["d_states"]) == {20}
    assert [(r["dstate"], r["padded_to"]) for r in doc["ssd"]] == [(24, 24), (24, 32), (16, 16)]
    assert doc["fastest_choices"] and set(doc["fastest_choices"].values()) <= {"reference", "triton"}
    assert doc["fastest_timings"].keys() == doc["fastest_choices"].keys()
    # the tile sweep: LAG 1, rows padded to a multiple of 8 (N' = 13 -> rows of 16) and the split tail (13 = 8 + 4
    # + 1) timed beside the rest
    assert [(r["dstate"], set(r["configs"])) for r in doc["configs"]] == [
        (13, {"16,16,4", "4,8,1", "4,8,1,1", "4,8,1,1,8", "4,8,1,0,8,1"})]
    assert "| tiny | 24 |" in run.stdout and "### Prefill scan" in run.stdout and "### Chain" in run.stdout
    assert "| tiny | 13 |" in run.stdout.split("### Tile sweep")[1]  # the sweep's own table


def test_padded_rows_keep_the_values_and_align_the_rows():
    import torch
    from bench_scripts import load_script

    padded_rows = load_script("state_update_kernels").padded_rows
    state = torch.randn(2, 3, 4, 116)
    view = padded_rows(state, 8)
    assert torch.equal(view, state) and view.stride() == (3 * 4 * 120, 4 * 120, 120, 1)
    assert padded_rows(state, 4) is state and padded_rows(state, 0) is state  # 116 is a multiple of 4


@pytest.mark.parametrize("configs", ["16,64", "16,64,2,2", "16,64,2,1,-8", "16,64,2,1,8,2", "16,64,2,1,8,0,0"])
def test_configs_are_checked_before_anything_runs(configs, tmp_path):
    from bench_scripts import load_script

    with pytest.raises(SystemExit, match="--configs must be 'BLOCK_M,BLOCK_N,warps"):
        load_script("state_update_kernels").parse_args(["--quick", "--out", str(tmp_path), "--configs", configs])
