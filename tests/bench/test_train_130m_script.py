"""benchmarks/train_130m.py: the --quick CPU smoke run end to end (corpus, sized training, dense and pruned
scores, the probe, JSON / markdown / plot, no weights kept), its grid order and budget, and its refusals."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench_scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_130m.py"


def test_quick_run_writes_every_result_and_no_weights(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path), "--budget-s", "600"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    doc = json.loads((tmp_path / "train_130m_v1.json").read_text())
    assert doc["kind"] == "train_130m" and "git_commit" in doc["environment"] and doc["seed"] == 0
    assert len(doc["corpus"]["sha256"]) == 64 and doc["tokenizer"]["identity"] == "byte"
    t = doc["training"]
    assert t["steps_done"] >= 1 and len(t["losses"]) == t["steps_done"]
    assert t["tokens_seen"] == t["steps_done"] * 4 * 128 and t["model_config"]["vocab_size"] == 256
    assert set(doc["dense"]["perplexity"]) == {"64", "256"} and set(doc["dense"]["probe"]) == {"32", "128"}
    # 7 criteria x 2 allocations + contribution calibrated at 256 (2 allocations), at r 0.3 and 0.7
    assert len(doc["rows"]) == 16 * 2 and doc["skipped"] == []
    first = doc["rows"][0]
    assert (first["criterion"], first["allocation"], first["calib_seqlen"], first["ratio"]) == (
        "contribution", "uniform", 128, 0.3)
    assert first["calibration"]["seq_len"] == 128 and first["calibration"]["tokens"] == 1024
    assert {r["calib_seqlen"] for r in doc["rows"] if r["criterion"] == "contribution"} == {128, 256}
    for r in doc["rows"]:
        assert all(p > 1 for p in r["perplexity"].values()) and 0 <= r["probe"]["128"]["exact_match"] <= 1
    text = (tmp_path / "train_130m_v1.md").read_text()
    assert "| dense | | | 0 | 0 |" in text and "| contribution | uniform | 128 | 0.3 |" in text
    assert (tmp_path / "train_130m_v1.png").stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_130m_v1.json", "train_130m_v1.md",
                                                           "train_130m_v1.png"]


def _args(**changes) -> argparse.Namespace:
    import torch

    base = dict(calib_seqlen=128, ratios=[0.5], budget_s=0.0, calib_tokens=256, contexts=[32], distances=[8],
                device=torch.device("cpu"), quick=True)
    return argparse.Namespace(**{**base, **changes})


def test_grid_order_and_budget():
    script = load_script("train_130m")
    blocks = script.grid(_args(), 2)
    assert blocks[:3] == [(128, "contribution", "uniform"), (128, "contribution", "global"),
                          (256, "contribution", "uniform")]
    assert blocks[-1] == (256, "contribution", "global") and all(c != "A" for _, c, _ in blocks)
    assert len(script.grid(_args(), 1)) == 7 * 2 + 2 and len(script.grid(_args(calib_seqlen=256), 1)) == 14

    from perfmamba.models import build_model

    rows, skipped = script.prune_grid(_args(), build_model("mamba1-tiny"), None, None, None)
    assert rows == [] and len(skipped) == 16  # no time left: nothing runs, everything is listed


@pytest.mark.parametrize("argv, message", [
    (["--quick", "--tokenizer", "bpe:512"], "--quick trains with the byte tokenizer"),
    (["--quick", "--tokenizer", "bpe"], "--tokenizer must be byte or bpe:N"),
    (["--quick", "--eval-tokens", "100"], "--eval-tokens 100 is shorter than the longest context 256"),
    (["--quick", "--ratios", "1.0"], "ratios must be in [0, 1)"),
    ([], "runs on CUDA only"),
])
def test_refusals(argv, message, tmp_path, monkeypatch, capsys):
    script = load_script("train_130m")
    monkeypatch.setattr(script.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        script.parse_args(["--out", str(tmp_path), *argv])
    assert message in capsys.readouterr().err


def test_bpe_corpus_and_tokenizer(tmp_path):
    pytest.importorskip("perfmamba.data.bpe", reason="the BPE trainer (perfmamba.data.bpe) has not landed")
    script = load_script("train_130m")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(40):
        (data / f"f{i}.py").write_text(f"def f{i}(x):\n    return x + {i}  # note {i}\n" * 30)
    args = argparse.Namespace(tokenizer="bpe:300", data=str(data), max_bytes=None, seed=0)
    corpus, tok = script.build_corpus(args, tmp_path)
    assert tok.identity.startswith("hf:") and 256 < tok.vocab_size <= 300
    assert corpus.tokenizer == tok.identity and corpus.tokens("test").numel() > 0
    assert (tmp_path / "tokenizer.json").is_file()
