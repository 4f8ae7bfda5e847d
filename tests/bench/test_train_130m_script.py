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
    ref = t["small_model_reference"]  # the quick run trains on the stdlib: its validation files are held out,
    # less any whose bytes recur in a training file
    assert ref["files"] and ref["perplexity"] > 1 and ref["seq_len"] == 512 and ref["of_val_files"] >= len(ref["files"])
    assert set(doc["dense"]["perplexity"]) == {"64", "256"} and set(doc["dense"]["probe"]) == {"32", "128"}
    copy = doc["dense"]["copy"]["128"]
    assert doc["complete"] is True and set(doc["dense"]["copy"]) == {"32", "128"}
    assert copy["gain"] == pytest.approx(copy["accuracy"] - copy["control_accuracy"]) and 0 <= copy["accuracy"] <= 1
    # 7 criteria x 2 allocations + contribution calibrated at 256 (2 allocations), at r 0.3 and 0.7
    assert len(doc["rows"]) == 16 * 2 and doc["skipped"] == []
    first = doc["rows"][0]
    assert (first["criterion"], first["allocation"], first["calib_seqlen"], first["ratio"]) == (
        "contribution", "uniform", 128, 0.3)
    assert first["calibration"]["seq_len"] == 128 and first["calibration"]["tokens"] == 1024
    assert {r["calib_seqlen"] for r in doc["rows"] if r["criterion"] == "contribution"} == {128, 256}
    for r in doc["rows"]:
        assert all(p > 1 for p in r["perplexity"].values()) and 0 <= r["probe"]["128"]["exact_match"] <= 1
        assert r["mode"] == "remove" and 0 < r["cache_saving"] < 1 and set(r["copy"]) == {"32", "128"}
    text = (tmp_path / "train_130m_v1.md").read_text()
    assert "| dense | | | 0 | 0 |" in text and "| contribution | uniform | 128 | 0.3 |" in text
    assert "copy@128 |" in text and "Incomplete" not in text
    assert (tmp_path / "train_130m_v1.png").stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_130m_v1.json", "train_130m_v1.md",
                                                           "train_130m_v1.png"]
    (tmp_path / "train_130m_v1.md").unlink()
    assert load_script("train_130m_report").main([str(tmp_path / "train_130m_v1.json")]) == 0
    assert (tmp_path / "train_130m_v1.md").read_text() == text  # the report redraws from the JSON alone


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


def test_mamba2_is_scored_masked_and_every_row_is_saved_as_it_comes(tmp_path):
    """Mamba-2's pruned models keep N (one compiled kernel shape for every layer's N'); the callback sees each
    row as soon as it is scored, so a run killed at its limit keeps what it measured."""
    import torch

    from perfmamba.data.tokenizer import ByteTokenizer
    from perfmamba.eval.probe import make_copy_probe, make_probe
    from perfmamba.models import build_model

    script = load_script("train_130m")
    tokens = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
    probes = (make_probe(ByteTokenizer(), tokens, (8,), 2), make_copy_probe(tokens, (8,), 2))
    seen = []
    args = _args(budget_s=1e9, calib_seqlen=256, ratios=[0.5], contexts=[32])
    model = build_model("mamba2-tiny")
    rows, skipped = script.prune_grid(args, model, tokens, tokens[:256], probes,
                                      on_row=lambda rows, skipped: seen.append(len(rows)))
    assert skipped == [] and seen == list(range(1, len(rows) + 1)) and len(rows) == 6 * 2
    assert all(r["mode"] == "mask" and "cache_saving" not in r for r in rows)
    assert {tuple(r["d_state_after"]) for r in rows if r["allocation"] == "uniform"} == {(model.config.d_state // 2,)
                                                                                        * model.config.n_layer}


def test_held_out_files_are_found_by_content_not_by_name(tmp_path):
    """The small models' validation files count as held out only where the training corpus did not train on
    their bytes, under whatever name (the local corpus calls them "stdlib/<path>" and splits them anew)."""
    from perfmamba.data.corpus import load_corpus

    script = load_script("train_130m")
    small_dir, big_dir = tmp_path / "small", tmp_path / "big"
    for i in range(300):
        text = f"def f{i}(x):\n    return x * {i}  # file {i}\n" * 20
        (small_dir / "pkg").mkdir(parents=True, exist_ok=True)
        (small_dir / "pkg" / f"m{i}.py").write_text(text)
        (big_dir / "stdlib" / "pkg").mkdir(parents=True, exist_ok=True)
        (big_dir / "stdlib" / "pkg" / f"m{i}.py").write_text(text)
    small, big = load_corpus(small_dir), load_corpus(big_dir, test_fraction=0.1)
    names, tokens = script.held_out_tokens(small, big)
    trained = set(big.files) - set(big.val_files) - set(big.test_files)
    assert len(names) >= 2 and names == [n for n in small.files if n in small.val_files
                                         and f"stdlib/{n}" not in trained]
    assert tokens.numel() == sum(len(f"def f{n[5:-3]}(x):\n    return x * {n[5:-3]}  # file {n[5:-3]}\n") * 20
                                 for n in names)
    # the same bytes trained under another name are not held out
    (big_dir / "copies").mkdir()
    for n in names:
        (big_dir / "copies" / n.replace("/", "_")).write_text((small_dir / n).read_text())
    again = load_corpus(big_dir, test_fraction=0.1)
    still = [n for n in names if f"copies/{n.replace('/', '_')}" not in
             set(again.files) - set(again.val_files) - set(again.test_files)]
    assert script.held_out_tokens(small, again)[0] == still and len(still) < len(names)
