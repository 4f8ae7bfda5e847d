"""The GPU results grid (docs/results/h100.md): prefill latency, decode throughput and memory of state-pruned
models against dense, with mamba-ssm's fused production kernels.

    python benchmarks/h100_results.py speed --out DIR [--budget-s 480] [--smoke]
    python benchmarks/h100_results.py quality --out DIR --preset mamba2-small   # mamba1-tiny / mamba2-tiny on a CPU
    python benchmarks/h100_results.py table --out DIR > docs/results/h100_speed.md
    python benchmarks/h100_results.py plots --out DIR                           # speed / memory / perplexity vs r

Speed depends on the pruned shape, not on which states were kept, so the speed grid times uniformly pruned
shapes with random weights: N' = what `prune_states(..., allocation="uniform")` keeps (floor(N (1 - r)), rounded
up to the kernels' legal multiple; the 2026-12-01 H200 rows used N - floor(N r), each row names its N'); the
accuracy side (`quality`) prunes a trained model (perfmamba.eval's cached trainer) at every r with every
criterion and allocation and scores held-out perplexity. Every finished point is appended to DIR/points.jsonl
(DIR/quality.jsonl), and a rerun skips it, so the grid can be split across calls of limited length.

Timing: `perfmamba.timing` (calls captured in a CUDA graph and replayed, L2 flushed before each call, median of
replays); dense and pruned are timed in the same process and compared as ratios. Decode times one token per
sequence for a serving batch, `model.step` replayed from a graph as mamba-ssm's generation does, so launch
overhead does not hide the SSM's cost. (The 2026-12-01 rows were timed with `triton.testing.do_bench` around
eager prefill calls: their prefill at small L includes launch time.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from perfmamba.bench.cases import kept_states
from perfmamba.models import build_model, get_preset
from perfmamba.timing import time_fn

SIZES = {1: ("mamba1-130m", "mamba1-1.4b"), 2: ("mamba2-130m", "mamba2-1.3b")}
SEQLENS = (64, 512, 2048, 8192, 16384)
RATIOS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
PREFILL_BATCH = {"130m": 8, "1.4b": 4, "1.3b": 4}
DECODE_BATCH = 64


def _bench_ms(fn) -> float:
    return time_fn(fn, "cuda", rounds=20, warmup=3).median * 1e3


def _prefill_point(model, batch: int, seqlen: int) -> dict:
    ids = torch.randint(0, model.config.vocab_size, (batch, seqlen), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.inference_mode():
        model(ids)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        ms = _bench_ms(lambda: model(ids))
    return {"prefill_ms": ms, "prefill_activation_peak_bytes": peak, "tokens_per_s": batch * seqlen / ms * 1e3}


def _decode_point(model, batch: int) -> dict:
    cache = model.allocate_cache(batch)
    token = torch.randint(0, model.config.vocab_size, (batch,), device="cuda")
    with torch.inference_mode():
        model(token[:, None].repeat(1, 16), cache=cache)  # a short prompt fills the cache
        ms = _bench_ms(lambda: model.step(token, cache))
    cache_bytes = sum(c.nbytes for c in cache) // batch
    return {"decode_step_ms": ms, "decode_tokens_per_s": batch / ms * 1e3, "decode_cache_bytes_per_seq": cache_bytes}


def speed(out: Path, budget_s: float, smoke: bool, presets: tuple[str, ...] | None = None,
          seqlens: tuple[int, ...] | None = None, decode: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    points_file = out / "points.jsonl"
    done = set()
    if points_file.exists():
        done = {json.loads(line)["id"] for line in points_file.read_text().splitlines() if line.strip()}
    start = time.monotonic()
    dtype = torch.bfloat16
    sizes = {1: ("mamba1-tiny",), 2: ("mamba2-tiny",)} if smoke else SIZES
    if seqlens is None:
        seqlens = (64, 256) if smoke else SEQLENS
    chosen = [(v, p) for v, names in sizes.items() for p in names]
    if presets is not None:
        chosen = [(get_preset(p).version, p) for p in presets]
    for version, preset in chosen:
        dense = get_preset(preset)
        for ratio in RATIOS:
            n = kept_states(preset, ratio)  # what prune_states(..., allocation="uniform") keeps
            todo = [L for L in seqlens if f"{preset}|r={ratio}|L={L}" not in done]
            decode_id = f"{preset}|r={ratio}|decode"
            if not todo and (decode_id in done or not decode):
                continue
            model = build_model(dense.replace(d_state=n), device="cuda", dtype=dtype).eval()
            for L in todo:
                if time.monotonic() - start > budget_s:
                    print(f"budget of {budget_s:.0f}s spent; rerun to continue", flush=True)
                    return
                size = preset.split("-")[1]
                row = {"id": f"{preset}|r={ratio}|L={L}", "preset": preset, "version": version, "ratio": ratio,
                       "d_state": n, "seqlen": L, "batch": PREFILL_BATCH.get(size, 2), "dtype": str(dtype)}
                try:
                    row.update(_prefill_point(model, row["batch"], L))
                except torch.cuda.OutOfMemoryError:
                    row["error"] = "out of memory"
                    torch.cuda.empty_cache()
                except Exception as e:  # noqa: BLE001 - one failing point must not lose the grid
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                _append(points_file, row)
            if decode and decode_id not in done:
                row = {"id": decode_id, "preset": preset, "version": version, "ratio": ratio, "d_state": n,
                       "batch": DECODE_BATCH, "dtype": str(dtype)}
                try:
                    row.update(_decode_point(model, DECODE_BATCH))
                except Exception as e:  # noqa: BLE001
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                _append(points_file, row)
            del model
            torch.cuda.empty_cache()


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def _with_dense(by_id: dict[str, dict], preset: str, ratio: float, point: str, key: str
                ) -> tuple[dict, dict] | None:
    """(the point at `ratio`, the dense point) of `preset` for `point` ("L=2048", "decode"), if both measured
    `key`; None where either is missing or failed."""
    p, d = by_id.get(f"{preset}|r={ratio}|{point}"), by_id.get(f"{preset}|r=0.0|{point}")
    return (p, d) if p and d and key in p and key in d else None


def _save(fig, axes, path: Path) -> Path:
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def table(out: Path) -> str:
    """Markdown tables of speedup and memory reduction vs the dense model (r = 0) of the same preset."""
    points = _read_rows(out / "points.jsonl")
    by_id = {p["id"]: p for p in points}
    lines = []
    presets = sorted({p["preset"] for p in points}, key=lambda s: (s[5], get_preset(s).d_model))
    for preset in presets:
        seqlens = sorted({p["seqlen"] for p in points if p["preset"] == preset and "seqlen" in p})
        if seqlens:
            batch = by_id.get(f"{preset}|r=0.0|L={seqlens[0]}", {}).get("batch", "?")
            lines += [f"### {preset} prefill (batch {batch}, bf16, fused path): latency ms (speedup vs dense)", ""]
            lines += ["| r | N' | " + " | ".join(f"L={L}" for L in seqlens) + " |",
                      "|---" * (len(seqlens) + 2) + "|"]
        for ratio in RATIOS:
            row = by_id.get(f"{preset}|r={ratio}|L={seqlens[0]}") if seqlens else None
            if row is None:
                continue
            cells = []
            for L in seqlens:
                pair = _with_dense(by_id, preset, ratio, f"L={L}", "prefill_ms")
                if pair is None:
                    cells.append(by_id.get(f"{preset}|r={ratio}|L={L}", {}).get("error", "-"))
                else:
                    p, d = pair
                    cells.append(f"{p['prefill_ms']:.2f} ({d['prefill_ms'] / p['prefill_ms']:.2f}x)")
            lines.append(f"| {ratio} | {row['d_state']} | " + " | ".join(cells) + " |")
        if seqlens:
            lines.append("")
        lines += [f"### {preset} decode (batch {DECODE_BATCH}, CUDA graph of one step)", "",
                  "| r | N' | step ms | tokens/s | speedup | cache bytes/seq | cache reduction |",
                  "|---|---|---|---|---|---|---|"]
        dense = by_id.get(f"{preset}|r=0.0|decode")
        for ratio in RATIOS:
            p = by_id.get(f"{preset}|r={ratio}|decode")
            if p is None or dense is None:
                continue
            if "decode_step_ms" not in p or "decode_step_ms" not in dense:
                lines.append(f"| {ratio} | {p['d_state']} | {p.get('error', '-')} | | | | |")
                continue
            lines.append(
                f"| {ratio} | {p['d_state']} | {p['decode_step_ms']:.3f} | {p['decode_tokens_per_s']:.0f} | "
                f"{p['decode_tokens_per_s'] / dense['decode_tokens_per_s']:.2f}x | "
                f"{p['decode_cache_bytes_per_seq']:,} | "
                f"{1 - p['decode_cache_bytes_per_seq'] / dense['decode_cache_bytes_per_seq']:.1%} |")
        lines.append("")
    return "\n".join(lines)


QUALITY_CRITERIA = ("delta", "contribution", "gramian", "random")
QUALITY_ALLOCATIONS = ("uniform", "global")


def quality(out: Path, preset: str, *, criteria: tuple[str, ...] = QUALITY_CRITERIA,
            eval_tokens: int = 16384, calib_rows: int = 16, seq_len: int = 256, device: str | None = None,
            backend: str | None = None) -> None:
    """Perplexity of `preset` trained (perfmamba.eval.trained_model) and pruned at every r, per criterion and
    allocation, on the first `eval_tokens` of the stdlib corpus' validation split; calibration on the last
    `calib_rows` rows of its training split. One calibration serves every criterion and ratio.

    `backend` ("reference", "cuda"; default: the ops' auto choice) scores with those ops. "reference" suits
    Mamba-2 on a GPU: layer-adaptive pruning gives every layer its own N', and mamba-ssm's Triton kernels would
    compile and autotune afresh for each (a minute apiece); perplexity does not depend on the kernels."""
    from perfmamba.data import load_corpus
    from perfmamba.eval import perplexity, trained_model
    from perfmamba.pruning import calibrate, prune_states

    out.mkdir(parents=True, exist_ok=True)
    rows_file = out / "quality.jsonl"
    done = {row["id"] for row in _read_rows(rows_file)}
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = trained_model(preset, device=device).eval()
    corpus = load_corpus()
    test = corpus.tokens("val")[:eval_tokens].to(device)
    calib = corpus.tokens("train")[-calib_rows * seq_len:].reshape(calib_rows, seq_len).to(device)
    stats = calibrate(model, calib, progress=False)

    def score(m) -> float:
        m.configure(backend=backend)
        with torch.inference_mode():
            return perplexity(m, test, seq_len=seq_len, stride=seq_len, batch_size=8, progress=False).perplexity

    dense = None
    for ratio in RATIOS:
        for criterion in criteria:
            for allocation in QUALITY_ALLOCATIONS if ratio > 0 else ("uniform",):
                row_id = f"{preset}|{criterion}|{allocation}|r={ratio}" if ratio > 0 else f"{preset}|dense"
                if row_id in done:
                    continue
                if ratio == 0:
                    dense = dense if dense is not None else score(model)
                    row = {"perplexity": dense, "d_state": list(model.config.d_states), "criterion": None,
                           "allocation": None, "cache_reduction": 0.0}
                else:
                    row = {"criterion": criterion, "allocation": allocation}
                    try:
                        pruned, report = prune_states(model, ratio, calib, criterion, allocation, stats=stats,
                                                      progress=False)
                    except ValueError as e:  # a ratio this model cannot take (too few states for the rounding)
                        row["error"] = str(e)
                    else:
                        row.update(perplexity=score(pruned), d_state=report.d_state_after,
                                   cache_reduction=report.cache_saving)
                        del pruned
                _append(rows_file, {"id": row_id, "preset": preset, "ratio": ratio, "device": device,
                                    "backend": backend or "auto", "eval_tokens": int(test.numel()), **row})
                done.add(row_id)


def _read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def quality_table(out: Path) -> str:
    rows = _read_rows(out / "quality.jsonl")
    lines = []
    for preset in sorted({r["preset"] for r in rows}):
        mine = [r for r in rows if r["preset"] == preset]
        dense = next((r for r in mine if r["ratio"] == 0), None)
        if dense is None:
            continue
        cols = [(c, a) for c in QUALITY_CRITERIA for a in QUALITY_ALLOCATIONS
                if any(r["criterion"] == c and r["allocation"] == a for r in mine)]
        lines += [f"### {preset}: held-out perplexity vs r (dense {dense['perplexity']:.3f}; "
                  f"{dense['eval_tokens']} tokens, {dense['device']})", "",
                  "| r | " + " | ".join(f"{c} / {a}" for c, a in cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for ratio in RATIOS[1:]:
            cells = []
            for c, a in cols:
                r = next((r for r in mine if r["ratio"] == ratio and r["criterion"] == c and r["allocation"] == a),
                         None)
                if r is None or "perplexity" not in r:
                    cells.append("-" if r is None else "n/a")
                else:
                    cells.append(f"{r['perplexity']:.3f} ({r['perplexity'] / dense['perplexity'] - 1:+.1%})")
            lines.append(f"| {ratio} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plots(out: Path) -> list[Path]:
    """speedup_vs_r.png, memory_vs_r.png (decode cache) and perplexity_vs_r.png, from whatever points exist."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    points = _read_rows(out / "points.jsonl")
    by_id = {p["id"]: p for p in points}
    presets = sorted({p["preset"] for p in points})
    if presets:
        # one speed panel per preset (a line per prefill length, decode dashed), then the decode cache
        fig, axes = plt.subplots(1, len(presets) + 1, figsize=(4.2 * (len(presets) + 1), 3.8), squeeze=False)
        ax_m = axes[0][-1]
        for ax_s, preset in zip(axes[0], presets):
            for L in sorted({p["seqlen"] for p in points if p["preset"] == preset and "seqlen" in p}):
                xs, ys = [], []
                for ratio in RATIOS:
                    if pair := _with_dense(by_id, preset, ratio, f"L={L}", "prefill_ms"):
                        xs.append(ratio)
                        ys.append(pair[1]["prefill_ms"] / pair[0]["prefill_ms"])  # dense / pruned
                if len(xs) > 1:
                    ax_s.plot(xs, ys, marker="o", label=f"prefill L={L}")
            xs, ys, cache = [], [], []
            for ratio in RATIOS:
                if pair := _with_dense(by_id, preset, ratio, "decode", "decode_tokens_per_s"):
                    p, d = pair
                    xs.append(ratio)
                    ys.append(p["decode_tokens_per_s"] / d["decode_tokens_per_s"])
                    cache.append(1 - p["decode_cache_bytes_per_seq"] / d["decode_cache_bytes_per_seq"])
            if len(xs) > 1:
                ax_s.plot(xs, ys, marker="s", color="black", linestyle="--", label=f"decode b{DECODE_BATCH}")
                ax_m.plot(xs, cache, marker="s", label=preset)
            ax_s.axhline(1.0, color="gray", linewidth=0.8)
            ax_s.set(xlabel="prune ratio r", ylabel="speedup vs dense", title=preset)
        ax_m.set(xlabel="prune ratio r", ylabel="reduction vs dense", title="decode-cache memory")
        written.append(_save(fig, axes[0], out / "speed_memory_vs_r.png"))
    rows = _read_rows(out / "quality.jsonl")
    presets = sorted({r["preset"] for r in rows})
    if presets:
        fig, axes = plt.subplots(1, len(presets), figsize=(5.5 * len(presets), 4), squeeze=False)
        for ax, preset in zip(axes[0], presets):
            mine = [r for r in rows if r["preset"] == preset]
            dense = next((r["perplexity"] for r in mine if r["ratio"] == 0), None)
            for c in QUALITY_CRITERIA:
                for a in QUALITY_ALLOCATIONS:
                    pts = sorted((r["ratio"], r["perplexity"]) for r in mine
                                 if r["criterion"] == c and r["allocation"] == a and "perplexity" in r)
                    if pts and dense is not None:
                        ax.plot([0.0, *(x for x, _ in pts)], [dense, *(y for _, y in pts)], marker="o",
                                linestyle="-" if a == "global" else "--", label=f"{c} / {a}")
            ax.set(xlabel="prune ratio r", ylabel="held-out perplexity", title=preset)
        written.append(_save(fig, axes[0], out / "perplexity_vs_r.png"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["speed", "quality", "table", "plots"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=480.0)
    parser.add_argument("--smoke", action="store_true", help="tiny presets and short sequences")
    parser.add_argument("--presets", default=None, help="comma-separated presets (default: the grid's four)")
    parser.add_argument("--seqlens", default=None, help="comma-separated prefill lengths ('' for none)")
    parser.add_argument("--no-decode", action="store_true", help="time prefill only")
    parser.add_argument("--preset", default="mamba2-tiny", help="quality: the trained preset to prune")
    parser.add_argument("--eval-tokens", type=int, default=16384, help="quality: held-out tokens scored")
    parser.add_argument("--backend", default=None, choices=["reference", "cuda"],
                        help="quality: the ops to score with (default: auto)")
    args = parser.parse_args(argv)
    if args.what == "speed":
        if not torch.cuda.is_available():
            print("the speed grid needs a CUDA device", file=sys.stderr)
            return 2
        presets = tuple(args.presets.split(",")) if args.presets else None
        seqlens = None if args.seqlens is None else tuple(int(v) for v in args.seqlens.split(",") if v)
        speed(args.out, args.budget_s, args.smoke, presets, seqlens, decode=not args.no_decode)
    elif args.what == "quality":
        quality(args.out, args.preset, eval_tokens=args.eval_tokens, backend=args.backend)
        print(quality_table(args.out))
    elif args.what == "plots":
        for path in plots(args.out):
            print(f"wrote {path}")
    else:
        print(table(args.out) if (args.out / "points.jsonl").exists() else "")
        print(quality_table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
