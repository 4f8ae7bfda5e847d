"""The component-level profile of the paper's models on one GPU: Mamba-1 130m / 1.4b and Mamba-2 130m / 1.3b shapes
(random weights: timing depends on shapes), prefill over L = 64..16384 at batch 1 and 4, decode (TTFT, TPOT),
unfused and fused paths, with CUDA-graph times, kernel attribution, memory, roofline and L^k fits.

    python benchmarks/gpu_profile_sweep.py --out docs/results/profile [--budget-s 420] [--tar sweep.tar.gz]
    python benchmarks/gpu_profile_sweep.py --smoke --out /tmp/sweep      # CPU, tiny presets, seconds
    python benchmarks/gpu_profile_sweep.py --report-only --out docs/results/profile   # re-render, measure nothing

Writes per model `<out>/<model>/profile.{json,csv,txt}` and plots (shares, scaling, roofline), and
`<out>/summary.md`: the tables with the paper's findings beside ours. Resumable: a model's profile.json is
rewritten after every point, and a rerun measures only the points not finished yet (an out-of-memory point
counts as finished). Time-bounded: `--budget-s` is shared fairly among the models still to run, and a point
that would not fit in what is left is skipped (a rerun picks it up).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tarfile
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script from a checkout: import the perfmamba beside it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perfmamba import ops  # noqa: E402
from perfmamba.models import build_model  # noqa: E402
from perfmamba.profiling import (  # noqa: E402
    ProfileConfig,
    ProfileResult,
    measure_peaks,
    profile,
    read_profile,
    reanalyse,
    write_profile_json,
    write_report,
)
from perfmamba.profiling.analysis import device_time, kernels_overlap  # noqa: E402
from perfmamba.profiling.formatting import format_header, format_point, format_series  # noqa: E402
from perfmamba.profiling.result import JSON_FILE, RESULT_KIND, validate_profile  # noqa: E402
from perfmamba.results import atomic_write_text, environment, read_json  # noqa: E402

GPU_MODELS = ("mamba1-130m", "mamba2-130m", "mamba1-1.4b", "mamba2-1.3b")  # small first: they finish for sure
SMOKE_MODELS = ("mamba1-tiny", "mamba2-tiny")
KERNEL_OPS = ("selective_scan", "ssd_scan", "causal_conv1d", "rms_norm", "selective_state_update")

# The paper (PerfMamba, Asif et al., arXiv 2511.22849), as the issue summarises it: what it measured and how.
PAPER = {
    "device": "NVIDIA A100 (40 GB)",
    "method": "PyTorch profiler only (operator times); no roofline; launch overhead not separated from GPU work",
    "seqlens": "64 to 16384",
    "memory": "reported 'memory' above the card's 40 GB: cumulative allocations, not the peak",
    "finding": "the SSM component (the selective scan) is the main cost of a Mamba-1 block",
}


def _config(args: argparse.Namespace, paths: tuple[str, ...]) -> ProfileConfig:
    if args.smoke:
        return ProfileConfig(seqlens=args.seqlens or (64, 128, 256), batch_sizes=args.batch or (1,),
                             device="cpu", rounds=3, warmup=1, min_time_s=0.0, cpu_threads=1, progress=False)
    return ProfileConfig(
        seqlens=args.seqlens or tuple(2**i for i in range(6, 15)), batch_sizes=args.batch or (1, 4),
        paths=paths, device="cuda", dtype="bfloat16", rounds=10, warmup=3, min_time_s=0.1, cuda_graphs=True,
        progress=False,
    )


def _kernels_missing() -> list[str]:
    status = ops.backend_status()
    return [f"{op}: {status[op]['cuda']}" for op in KERNEL_OPS if status[op].get("cuda") != "available"]


def _run_model(name: str, cfg: ProfileConfig, out: Path, budget_s: float, peaks) -> ProfileResult:
    folder = out / name
    previous = read_profile(folder) if (folder / JSON_FILE).is_file() else None
    device = torch.device(cfg.device)
    model = build_model(name, device=device, dtype=getattr(torch, cfg.dtype), seed=0)
    try:
        result = profile(
            model, dataclasses.replace(cfg, budget_s=max(budget_s, 1.0)), peaks=peaks, name=name, resume=previous,
            on_point=lambda partial: write_profile_json(partial, folder / JSON_FILE),
        )
    finally:
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    write_report(result, folder)
    return result


def _si(x: float) -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= factor:
            return f"{x / factor:.3g} {prefix}"
    return f"{x:.3g} "


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for factor, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{n} B"


def _largest_ok(result: ProfileResult, mode: str, batch: int):
    done = [p for p in result.ok_points() if p.mode == mode and p.batch == batch and p.path == "unfused"]
    return max(done, key=lambda p: p.seqlen) if done else None


def _label(p) -> str:
    return f"{p.path} {p.mode} b{p.batch} L{p.seqlen}"


def _findings(results: dict[str, ProfileResult]) -> list[tuple[str, str, str]]:
    """(question, the paper, ours) rows, ours read off the measured results."""
    rows = [
        ("device and method", f"{PAPER['device']}; {PAPER['method']}", ""),
        ("sequence lengths", PAPER["seqlens"], ""),
    ]
    any_result = next(iter(results.values()), None)
    if any_result is not None:
        env_peaks = any_result.peaks
        ours = f"{any_result.model.device}, {any_result.model.dtype}; CUDA events per component, kernel " \
               "attribution from torch.profiler traces, CUDA-graph replay, measured roofline"
        if env_peaks is not None:
            ours += f" ({env_peaks.name}: {_si(env_peaks.matmul_flops_per_s)}FLOP/s {env_peaks.dtype} matmul, " \
                    f"{_si(env_peaks.copy_bytes_per_s)}B/s copy)"
        rows[0] = (rows[0][0], rows[0][1], ours)
        lengths = sorted({p.seqlen for r in results.values() for p in r.ok_points()})
        rows[1] = (rows[1][0], rows[1][1], f"{lengths[0]} to {lengths[-1]}" if lengths else "-")
    for name, result in results.items():
        for batch in result.config.batch_sizes:
            top = _largest_ok(result, "prefill", batch)
            if top is None:
                continue
            # Shares of device time: at a launch-bound point the span times are the CPU's launch times.
            times = {c.name: device_time(top, c) or 0.0 for c in top.components}
            total = sum(times.values()) or 1.0
            parts = sorted(((t / total, n) for n, t in times.items()), reverse=True)[:4]
            ranked = ", ".join(f"{n} {100 * s:.0f}%" for s, n in parts)
            if top.launch_bound:
                ranked += " (launch-bound: shares of kernel time)"
            paper = PAPER["finding"] if name.startswith("mamba1") else "the SSM component demands a significant share"
            rows.append((f"{name} prefill, batch {batch}, L {top.seqlen}: largest components (device time)",
                         paper, ranked))
        top = _largest_ok(result, "prefill", min(result.config.batch_sizes))
        if top is not None and top.peak_bytes is not None:
            rows.append((f"{name} memory at L {top.seqlen}, batch {top.batch}", PAPER["memory"],
                         f"peak {_bytes(top.peak_bytes)} ({top.memory_method}); cumulative allocations "
                         f"{_bytes(top.allocated_bytes)} in the same forward"))
        measured = [p for p in result.ok_points() if p.busy_fraction is not None]
        if measured:
            bound = ", ".join(_label(p) for p in measured if p.launch_bound)
            rows.append((f"{name}: launch-bound points (GPU busy < "
                         f"{result.config.launch_bound_threshold:.0%} of wall time)", "not examined",
                         bound or "none"))
            overlap = ", ".join(f"{_label(p)} ({p.busy_fraction:.2f}x)" for p in measured if kernels_overlap(p))
            if overlap:
                rows.append((f"{name}: points whose kernel records overlap (sum of kernel times / wall time)",
                             "not examined", f"{overlap}: span times are the device time there"))
        fit = next((f for f in result.fits if f.mode == "prefill" and f.component == "ssm_scan"
                    and f.path == "unfused"), None)
        if fit is not None:
            tail = f", {fit.k_tail:.2f} over the longer half" if fit.k_tail is not None else ""
            rows.append((f"{name}: SSM scan device time ~ L^k (unfused prefill, batch {fit.batch})", "not fitted",
                         f"k = {fit.k:.2f}{tail}"))
        tpot = next((f for f in result.fits if f.mode == "decode" and f.component == "total"), None)
        if tpot is not None:
            rows.append((f"{name}: TPOT ~ L^k (prompt length; CUDA-graph time)", "TPOT reported per length",
                         f"k = {tpot.k:.2f} (a fixed-size state: constant per token)"))
    return rows


def _summary(results: dict[str, ProfileResult], env: dict, wall_s: float, notes: list[str]) -> str:
    lines = [
        "# Component-level profile of Mamba-1 and Mamba-2", "",
        f"- device: {env.get('gpu') or env.get('cpu')}; torch {env['torch']} (CUDA {env['cuda']}); mamba-ssm "
        f"{env['mamba_ssm']}; causal-conv1d {env['causal_conv1d']}; triton {env['triton']}",
        f"- perfmamba {env['perfmamba']} at commit {env['git_commit']}; {env['timestamp']}; measuring "
        f"took {wall_s:.0f} s",
        "- random weights (timing depends on shapes only); per model: `<model>/profile.json` (raw samples, "
        "schema-versioned), `profile.csv`, `profile.txt`, `shares.png`, `scaling.png`, `roofline.png`",
        *[f"- note: {n}" for n in notes], "",
        "## The paper's findings beside ours", "",
        "| question | paper (A100, PyTorch profiler) | ours (measured here) |", "|---|---|---|",
        *[f"| {q} | {p} | {o} |" for q, p, o in _findings(results)], "",
        "Reading the tables: times are medians per call (a forward, or one decode step) from CUDA events; shares "
        "are each component's self time; `cover` is the named components' sum over the end-to-end time; `busy` "
        "is the GPU's kernel time over the wall time (`*`: launch-bound, the GPU waits for the CPU, and span "
        "times there are launch times; `!`: the kernel records overlap, their sum exceeds the wall time, and span "
        "times are the device time there); `graph ms` replays the call from a CUDA graph, without launch "
        "overhead; `k` is the exponent of device time ~ L^k fitted over the series (a component's kernel time, "
        "or its span time where the kernel records overlap; the total's CUDA-graph time).", "",
    ]
    for name, result in results.items():
        lines += [f"## {name}", "", "```", format_header(result), ""]
        series: dict[tuple, list] = {}
        for p in result.points:
            series.setdefault((p.path, p.mode, p.batch), []).append(p)
        for key, points in series.items():
            lines += [format_series(result, key, sorted(points, key=lambda p: p.seqlen)), ""]
        top = _largest_ok(result, "prefill", max(result.config.batch_sizes)) or _largest_ok(
            result, "prefill", min(result.config.batch_sizes))
        if top is not None:
            lines += [format_point(top), ""]
        lines += ["```", ""]
    return "\n".join(lines)


def _report_only(args: argparse.Namespace) -> int:
    found = [d.name for d in sorted(args.out.iterdir()) if (d / JSON_FILE).is_file()]
    models = args.models.split(",") if args.models else sorted(
        found, key=lambda m: GPU_MODELS.index(m) if m in GPU_MODELS else len(GPU_MODELS))
    results: dict[str, ProfileResult] = {}
    env: dict = {}
    for name in models:
        folder = args.out / name
        doc = read_json(folder / JSON_FILE, kind=RESULT_KIND)  # read once: the environment and the profile
        env = doc["environment"]
        results[name] = reanalyse(validate_profile(doc, str(folder / JSON_FILE)))
        write_report(results[name], folder, environment=env)
        print(f"{name}: re-rendered {len(results[name].points)} points", flush=True)
    if not results:
        print(f"no <model>/{JSON_FILE} under {args.out}", file=sys.stderr)
        return 2
    measured_s = sum(p.wall_s or 0.0 for r in results.values() for p in r.points)
    atomic_write_text(args.out / "summary.md", _summary(results, env, measured_s, list(args.note)))
    print(f"wrote {args.out}/summary.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--budget-s", type=float, default=420.0, help="seconds for the whole sweep (default 420)")
    parser.add_argument("--models", default=None, help="comma-separated presets (default: the paper's four)")
    parser.add_argument("--seqlens", default=None, help="comma-separated lengths (default 64..16384)")
    parser.add_argument("--batch", default=None, help="comma-separated batch sizes (default 1,4)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny presets, three lengths: a quick check")
    parser.add_argument("--allow-reference", action="store_true",
                        help="run on a GPU without mamba-ssm / causal-conv1d kernels (pure-PyTorch ops: slow)")
    parser.add_argument("--tar", type=Path, default=None, help="also pack the output directory into this .tar.gz")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: re-render the reports and summary.md from the models' profile.json "
                             "(derived numbers recomputed by this version's rules, the measuring machine kept)")
    parser.add_argument("--note", action="append", default=[], help="a line for summary.md's notes (repeatable)")
    args = parser.parse_args(argv)
    if args.report_only:
        return _report_only(args)
    args.seqlens = tuple(int(v) for v in args.seqlens.split(",")) if args.seqlens else None
    args.batch = tuple(int(v) for v in args.batch.split(",")) if args.batch else None
    start = time.monotonic()
    notes: list[str] = list(args.note)
    if not args.smoke:
        if not torch.cuda.is_available():
            print("no CUDA device: use --smoke for the CPU check", file=sys.stderr)
            return 2
        missing = _kernels_missing()
        if missing and not args.allow_reference:
            print("the CUDA kernels are missing (install mamba-ssm and causal-conv1d, or pass --allow-reference):\n  "
                  + "\n  ".join(missing), file=sys.stderr)
            return 2
        if missing:
            notes.append("ran without some CUDA kernels (reference ops on the GPU): " + "; ".join(missing))
    fused = ops.backend_status()["mamba_inner"].get("cuda") == "available"
    paths = ("unfused", "fused") if fused and not args.smoke else ("unfused",)
    if not fused and not args.smoke:
        notes.append("fused path not profiled: " + ops.backend_status()["mamba_inner"].get("cuda", "unknown"))
    cfg = _config(args, paths).resolved()
    models = tuple(args.models.split(",")) if args.models else (SMOKE_MODELS if args.smoke else GPU_MODELS)
    if cfg.cpu_threads is not None and cfg.device == "cpu":
        torch.set_num_threads(cfg.cpu_threads)  # the peaks too, not only the profile, on the profile's threads
    args.out.mkdir(parents=True, exist_ok=True)
    peaks = measure_peaks(cfg.device, getattr(torch, cfg.dtype) if not args.smoke else None)
    results: dict[str, ProfileResult] = {}
    for i, name in enumerate(models):
        left = args.budget_s - (time.monotonic() - start) - 15.0  # keep time for the plots and the summary
        share = left / (len(models) - i)
        t0 = time.monotonic()
        result = _run_model(name, cfg, args.out, share, peaks)
        results[name] = result
        counts = {s: sum(p.status == s for p in result.points) for s in ("ok", "oom", "skipped", "error")}
        print(f"{name}: {counts} in {time.monotonic() - t0:.0f} s", flush=True)
        for p in result.points:
            if p.status == "error":
                print(f"  error at {p.key}: {p.message}", flush=True)
    summary = _summary(results, environment(), time.monotonic() - start, notes)
    atomic_write_text(args.out / "summary.md", summary)
    if args.tar is not None:
        with tarfile.open(args.tar, "w:gz") as tar:
            tar.add(args.out, arcname=args.out.name)
    print(f"wrote {args.out}/summary.md ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
