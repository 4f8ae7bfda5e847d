"""benchmarks/state_update_kernels.py --quick: the GPU script's every section, run on the CPU through Triton's
interpreter at tiny sizes, so that the script cannot rot between GPU runs. A subprocess: the interpreter must be
chosen before the process first imports triton."""

from __future__ import annotations

import pytest
from bench_scripts import load_script, run_quick

pytest.importorskip("triton")
REF = "perfmamba.ops.selective_scan:selective_state_update_ref"  # the --quick run's plug-in probe


def test_quick_run_writes_every_section(tmp_path):
    run, doc = run_quick("state_update_kernels", tmp_path, "state_update.json")
    assert doc["kind"] == "state_update_kernels" and "git_commit" in doc["environment"]
    assert doc["copy"]["bandwidth_Bps"] > 0
    assert [(r["shape"], r["dstate"]) for r in doc["kernel"]] == [("tiny", 24), ("tiny", 13), ("mamba1-130m", 5)]
    assert all(r["triton"]["median_s"] > 0 and r["speedup"] > 0 and r["outputs_agree"] for r in doc["kernel"])
    # the probes, a tile and a plug-in, timed beside ours in the kernel section
    assert all(set(r["vs_probes"]) == {"triton[8,32,1]", REF} and r[REF]["median_s"] > 0 for r in doc["kernel"])
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
        (n, b, 2) for n in (24, 13) for b in ("reference", "triton", "triton[8,32,1]", REF)}
    backends = ("reference", "triton", "fastest", "triton[8,32,1]", REF, "skip")
    assert {(r["variant"], r["backend"]) for r in doc["model"]} == {
        (v, b) for v in ("dense N=32", "uniform N'=20", "global r=0.5") for b in backends}
    assert all(r["kernel_per_layer_s"] == 0.0 for r in doc["model"] if r["backend"] == "skip")
    uniform = next(r for r in doc["model"] if r["variant"] == "uniform N'=20")
    assert set(uniform["d_states"]) == {20}
    assert [(r["dstate"], r["padded_to"]) for r in doc["ssd"]] == [(24, 24), (24, 32), (16, 16)]
    assert doc["fastest_choices"] and set(doc["fastest_choices"].values()) <= {"reference", "triton"}
    assert doc["fastest_timings"].keys() == doc["fastest_choices"].keys()
    assert [(r["dstate"], set(r["configs"])) for r in doc["configs"]] == [(13, {"16,16,4", "4,8,1", "8,4,1"})]
    assert "| tiny | 24 |" in run.stdout and "### Prefill scan" in run.stdout and "### Chain" in run.stdout
    assert "| tiny | 13 |" in run.stdout.split("### Tile sweep")[1]  # the sweep's own table


@pytest.mark.parametrize(("flag", "value"), [("--configs", "16,64"), ("--configs", "16,64,2,8"),
                                             ("--configs", "16,-64,2"), ("--configs", "16,x,2"),
                                             ("--configs", ";"), ("--probes", "16,64,2,8"), ("--probes", "16,64")])
def test_configs_are_checked_before_anything_runs(flag, value, tmp_path):
    with pytest.raises(SystemExit, match=f"{flag} takes configs 'BLOCK_M,BLOCK_N,warps"):
        load_script("state_update_kernels").parse_args(["--quick", "--out", str(tmp_path), flag, value])


def test_probes_take_tiles_and_plug_ins(tmp_path):
    args = load_script("state_update_kernels").parse_args(
        ["--quick", "--out", str(tmp_path), "--probes", f"8,128,1;{REF}"])
    assert args.probes == ((8, 128, 1), REF) and args.probe_backends == ("triton[8,128,1]", REF)


def test_kernel_section_takes_its_dstates(tmp_path):
    script = load_script("state_update_kernels")
    assert script.parse_args(["--quick", "--out", str(tmp_path)]).dstates == (24, 13)
    assert script.parse_args(["--quick", "--out", str(tmp_path), "--dstates", "20,12"]).dstates == (20, 12)


@pytest.mark.parametrize("flag", ["--dstates", "--config-dstates"])
@pytest.mark.parametrize("value", ["x", "64,0", ""])
def test_bad_dstates_are_refused_in_one_line(flag, value, tmp_path):
    with pytest.raises(SystemExit, match=f"{flag} takes positive N' separated by commas"):
        load_script("state_update_kernels").parse_args(["--quick", "--out", str(tmp_path), flag, value])


def test_report_leaves_out_sections_that_did_not_run():
    """A run of some sections (`--sections kernel,model`, no probes) prints their tables and no empty ones."""
    row = {"median_s": 2e-5, "of_bound": 0.5}
    doc = {"config": {"baseline": "cuda"}, "kernel": [{"shape": "s", "dstate": 8, "cuda": row, "triton": row,
                                                       "speedup": 1.0, "vs_probes": {}}],
           "model": [], "ssd": []}
    text = load_script("state_update_report").tables(doc)
    assert text.startswith("### Decode kernel") and "| s | 8 | 20.0 (50%) | 20.0 (50%) | 1.00x | 1.00x |" in text
    assert text.count("###") == 1
