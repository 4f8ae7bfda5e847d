"""benchmarks/vs_mamba_ssm.py: the --quick CPU smoke run end to end (our side only), its refusal to run the real
comparison without mamba-ssm, and its tables with mamba-ssm's numbers in them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench_scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "vs_mamba_ssm.py"


def test_quick_run_writes_every_section(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    doc = json.loads((tmp_path / "vs_mamba_ssm.json").read_text())
    assert doc["kind"] == "vs_mamba_ssm" and "git_commit" in doc["environment"]
    assert doc["config"]["mamba_ssm"] is False and doc["config"]["presets"] == ["mamba1-tiny", "mamba2-tiny"]
    assert [(r["preset"], r["mode"]) for r in doc["step"]] == [
        (p, m) for p in ("mamba1-tiny", "mamba2-tiny") for m in ("prefill", "decode")]
    assert all(r["ours"]["median_s"] > 0 and len(r["ours"]["samples_s"]) == 2 and r["ratio"] is None
               for r in doc["step"])
    gen = {(r["preset"], r["variant"], r["batch"]): r for r in doc["generate"]}
    assert set(gen) == {(p, v, b) for p in ("mamba1-tiny", "mamba2-tiny") for v in ("dense", "uniform r=0.5")
                        for b in (1, 4)}
    assert gen[("mamba1-tiny", "dense", 4)]["d_state"] == 16
    assert gen[("mamba1-tiny", "uniform r=0.5", 4)]["d_state"] == 8
    for r in gen.values():
        assert r["ours"]["tokens_per_s"] == pytest.approx(r["batch"] * r["new_tokens"] / r["ours"]["median_s"])
    assert [(r["preset"], r["mode"], r["side"]) for r in doc["kernels"]] == [
        (p, m, "ours") for p in ("mamba1-tiny", "mamba2-tiny") for m in ("prefill", "decode")]
    for r in doc["kernels"]:
        seconds = [k["seconds"] for k in r["top"]]
        assert seconds == sorted(seconds, reverse=True) and 0 < sum(seconds) <= r["total_s"] * (1 + 1e-9)
        assert any(k["name"] == "aten::mm" for k in r["top"])  # the projections, on the CPU's profile
    text = (tmp_path / "vs_mamba_ssm.md").read_text()
    assert "| mamba1-tiny | prefill b2 L64 |" in text and "| mamba2-tiny | uniform r=0.5 | 16 | 4 |" in text
    assert "ours (eager)" in text and text in run.stdout


def test_the_real_comparison_needs_mamba_ssm(tmp_path, monkeypatch):
    script = load_script("vs_mamba_ssm")
    monkeypatch.setattr(script.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="runs on CUDA only; the device is cpu; --quick runs our side alone"):
        script.parse_args(["--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"unknown --sections \['kernel'\]"):
        script.parse_args(["--quick", "--out", str(tmp_path), "--sections", "kernel"])


def test_tables_hold_mamba_ssms_numbers():
    script = load_script("vs_mamba_ssm")
    summary = {"median_s": 2e-3, "clock": "cuda_graph"}
    doc = {"environment": {"gpu": "NVIDIA H200", "torch": "2.11", "mamba_ssm": "2.3.2", "git_commit": "abc"},
           "config": {"dtype": "bf16", "command": "python3 benchmarks/vs_mamba_ssm.py --out d", "cg": True},
           "step": [{"preset": "mamba1-130m", "mode": "decode", "seqlen": 512, "batch": 64, "ours": summary,
                     "mamba_ssm": {"median_s": 1.6e-3}, "ratio": 1.25, "logits_rel_error": 0.0104}],
           "generate": [{"preset": "mamba1-130m", "variant": "dense", "d_state": 16, "batch": 64,
                         "ours": {"tokens_per_s": 50000.0}, "mamba_ssm": {"tokens_per_s": 62500.0},
                         "ours_over_mamba_ssm_tokens_per_s": 0.8, "same_tokens": 0.97}],
           "kernels": [{"preset": "mamba1-130m", "mode": "decode", "seqlen": 512, "batch": 64, "side": "mamba_ssm",
                        "clock": "device", "total_s": 1.5e-3, "kernels": 30,
                        "top": [{"name": "selective_state_update_kernel" + "x" * 100, "seconds": 5e-4, "calls": 24,
                                 "share": 1 / 3}]}]}
    text = script.markdown(doc)
    assert "| mamba1-130m | decode b64 L512 | 2.000 | 1.600 | 1.250x | 1.04% |" in text
    assert "| mamba1-130m | dense | 16 | 64 | 50000 | 62500 | 0.800x | 97% |" in text
    assert "mamba1-130m decode b64 L512, mamba_ssm (30 kernels, 1.500 ms device time per call)" in text
    assert "| `selective_state_update_kernelxxx" in text and "...` | 0.500 | 24 | 33.3% |" in text


def test_processes_run_each_preset_fresh_and_summarise_the_ratio(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path), "--presets", "mamba1-tiny",
                          "--sections", "step", "--processes", "2"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    doc = json.loads((tmp_path / "vs_mamba_ssm.json").read_text())
    assert doc["config"]["processes"] == 2 and doc["config"]["sections"] == ["step"]
    assert sorted((r["process"], r["mode"]) for r in doc["step"]) == [
        (k, m) for k in (0, 1) for m in ("decode", "prefill")]
    assert {p.name for p in (tmp_path / "processes").iterdir()} == {"mamba1-tiny-0", "mamba1-tiny-1"}
    over = {r["mode"]: r for r in doc["step_over_processes"]}
    assert set(over) == {"prefill", "decode"} and all(r["processes"] == 2 for r in over.values())
    prefill = [r["ours"]["median_s"] for r in doc["step"] if r["mode"] == "prefill"]
    assert over["prefill"]["ours_median_s"] == pytest.approx(sum(prefill) / 2)  # the median of two
    assert over["prefill"]["ratio_median"] is None  # --quick times our side alone
    text = (tmp_path / "vs_mamba_ssm.md").read_text()
    assert "| mamba1-tiny | prefill b2 L64 | 2 |" in text and "| mamba1-tiny (process 2) |" in text


def test_processes_must_be_positive(tmp_path):
    with pytest.raises(SystemExit, match="--processes must be at least 1, got 0"):
        load_script("vs_mamba_ssm").parse_args(["--quick", "--out", str(tmp_path), "--processes", "0"])
