"""benchmarks/h100_results.py's tables and plots from result rows (the GPU grid itself needs a GPU)."""

import json
from pathlib import Path

import bench_scripts


def load_script():
    return bench_scripts.load_script("h100_results")


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_tables_and_plots_from_rows(tmp_path):
    script = load_script()
    speed = []
    for ratio, ms, tok in ((0.0, 10.0, 100.0), (0.5, 8.0, 125.0)):
        speed.append({"id": f"mamba1-130m|r={ratio}|L=2048", "preset": "mamba1-130m", "ratio": ratio,
                      "d_state": 16 if ratio == 0 else 8, "seqlen": 2048, "batch": 8, "prefill_ms": ms})
        speed.append({"id": f"mamba1-130m|r={ratio}|decode", "preset": "mamba1-130m", "ratio": ratio,
                      "d_state": 16 if ratio == 0 else 8, "decode_step_ms": 1.0, "decode_tokens_per_s": tok,
                      "decode_cache_bytes_per_seq": 100 if ratio == 0 else 60})
    speed.append({"id": "mamba1-130m|r=0.9|decode", "preset": "mamba1-130m", "ratio": 0.9, "d_state": 2,
                  "error": "RuntimeError: boom"})
    _write(tmp_path / "points.jsonl", speed)
    quality = [{"id": "p|dense", "preset": "p", "ratio": 0.0, "perplexity": 4.0, "criterion": None,
                "allocation": None, "eval_tokens": 100, "device": "cpu"},
               {"id": "p|contribution|global|r=0.5", "preset": "p", "ratio": 0.5, "perplexity": 5.0,
                "criterion": "contribution", "allocation": "global", "eval_tokens": 100, "device": "cpu"}]
    _write(tmp_path / "quality.jsonl", quality)
    text = script.table(tmp_path)
    assert "| 0.5 | 8 | 8.00 (1.25x) |" in text
    assert "1.25x | 60 | 40.0% |" in text and "RuntimeError: boom" in text
    assert "| 0.5 | 5.000 (+25.0%) |" in script.quality_table(tmp_path)
    written = script.plots(tmp_path)
    assert [p.name for p in written] == ["speed_memory_vs_r.png", "perplexity_vs_r.png"]
    assert all(p.stat().st_size > 1000 for p in written)
