"""Issue 15 on a GPU: perfmamba's model against mamba-ssm's `MambaLMHeadModel` holding the same weights, in one
process.

    python3 benchmarks/vs_mamba_ssm.py --out DIR            # CUDA + mamba-ssm: ~3 min on an H200
    python3 benchmarks/vs_mamba_ssm.py --quick --out DIR    # CPU smoke run: tiny presets, our side only

Sections (`--sections`), per preset (130m and 1.4b / 1.3b shapes of both versions, bf16, random weights):
- step: ours / mamba-ssm for prefill b8 L8192 and the decode step b64 after a 512-token prompt, each a CUDA-graph
  replay, the two interleaved round by round (perfmamba.timing.time_interleaved, L2 flushed): the benchmark
  level vs_mamba_ssm's workloads (perfmamba.bench.reference_model), with the logits' relative error;
- generate: tokens/s of greedy generation at batch 1 and 64 (a 128-token prompt, 128 new tokens), dense and
  uniformly pruned (r = 0.5, contribution): ours `MambaLM.generate(cg=True)` against mamba-ssm's
  `generate(cg=True)`, alternating calls, host clock around each synchronised call (prompt included);
- kernels: torch.profiler's top kernels by device time per call, ours and mamba-ssm's, at the prefill and decode
  points, to locate the gap.
Writes DIR/vs_mamba_ssm.json (every sample, environment, git commit) and DIR/vs_mamba_ssm.md (the tables).
`--processes N` runs the step section of each preset in N fresh processes (DIR/processes/) and reports each ratio's
median and range over them: a report of more rounds from independent processes, not a judgement (that is
`perfmamba gate`'s). On the H200 Mamba-2's prefill ratios spread 0.95-1.05 round to round, so 5 rounds of one
process leave about +-1% on their median (docs/results/vs_mamba_ssm.md).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script from a checkout: import the perfmamba beside it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perfmamba.bench.cases import REFERENCE_LEVEL, Case  # noqa: E402
from perfmamba.bench.reference_model import (  # noqa: E402
    mamba_ssm_generate,
    mamba_ssm_model,
    ours_over_mamba_ssm,
    reference_workload,
    unavailable_reason,
)
from perfmamba.bench.workloads import ModelCache, make_workload, prune  # noqa: E402
from perfmamba.models.lm import build_model  # noqa: E402
from perfmamba.results import atomic_write_text, read_json, write_json  # noqa: E402
from perfmamba.timing import configure_process, time_fn, time_interleaved  # noqa: E402

START = time.perf_counter()
SECTIONS = ("step", "generate", "kernels")
PRESETS = ("mamba1-130m", "mamba2-130m", "mamba1-1.4b", "mamba2-1.3b")
QUICK_PRESETS = ("mamba1-tiny", "mamba2-tiny")
TOP_KERNELS = 12


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] {message}", file=sys.stderr, flush=True)


def summary(samples) -> dict:
    return {**samples.summary(), "samples_s": list(samples.seconds)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- step: prefill and the decode step, interleaved -----------------------------------------------------------
def step_section(args, preset: str, models: ModelCache) -> list[dict]:
    rows = []
    for mode, seqlen, batch in args.points:
        case = Case(preset, REFERENCE_LEVEL, mode, seqlen, batch, dtype=args.dtype)
        ours = make_workload(case, args.device, models)
        row = {"preset": preset, "mode": mode, "seqlen": seqlen, "batch": batch, "case": case.id}
        if args.reference:
            theirs = reference_workload(case, args.device, models)
            s = time_interleaved({"ours": ours.fn, "mamba_ssm": theirs.fn}, args.device, rounds=args.rounds,
                                 warmup=args.warmup)
            row.update(ours=summary(s["ours"]), mamba_ssm=summary(s["mamba_ssm"]),
                       ratio=ours_over_mamba_ssm(s["ours"], s["mamba_ssm"], case.id),
                       logits_rel_error=theirs.info["logits_rel_error"])
        else:
            row.update(ours=summary(time_fn(ours.fn, args.device, rounds=args.rounds, warmup=args.warmup)),
                       mamba_ssm=None, ratio=None, logits_rel_error=None)
        log(f"step {case.id}: ours {row['ours']['median_s'] * 1e3:.3f} ms"
            + (f", mamba-ssm {row['mamba_ssm']['median_s'] * 1e3:.3f} ms, ratio {row['ratio']:.3f}"
               if row["ratio"] is not None else ""))
        rows.append(row)
    return rows


def step_over_processes(args) -> tuple[list[dict], list[dict]]:
    """The step section of each preset in `args.processes` fresh processes, the presets taking turns so that a
    drift over the run spreads over all of them. Returns (every process's rows, each point's ratio over them)."""
    rows = []
    for k in range(args.processes):
        for preset in args.presets:
            out = args.out / "processes" / f"{preset}-{k}"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(out), "--presets", preset,
                   "--sections", "step", "--rounds", str(args.rounds), *(["--quick"] if args.quick else [])]
            log(f"process {k + 1}/{args.processes}: {preset}")
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            rows += [{**r, "process": k} for r in read_json(out / "vs_mamba_ssm.json")["step"]]
    points: dict[tuple, list[dict]] = {}
    for r in rows:
        points.setdefault((r["preset"], r["mode"], r["seqlen"], r["batch"]), []).append(r)
    summary = []
    for (preset, mode, seqlen, batch), same in points.items():
        ratios = [r["ratio"] for r in same if r["ratio"] is not None]
        summary.append({"preset": preset, "mode": mode, "seqlen": seqlen, "batch": batch, "processes": len(same),
                        "ours_median_s": statistics.median(r["ours"]["median_s"] for r in same),
                        "ratios": ratios, "ratio_median": statistics.median(ratios) if ratios else None})
    return rows, summary


# --- generate: tokens/s ---------------------------------------------------------------------------------------
def _timed(fn, device: torch.device) -> tuple[float, torch.Tensor]:
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, out


def generate_section(args, preset: str, models: ModelCache) -> list[dict]:
    dense_case = Case(preset, "model", dtype=args.dtype)
    dense = models.get(dense_case, args.device)
    variants = {"dense": dense}
    if args.prune_ratio > 0:
        variants[f"uniform r={args.prune_ratio:g}"] = prune(dense, args.prune_ratio, "contribution")[0]
    rows = []
    for variant, ours in variants.items():
        theirs = None
        if args.reference and ours is dense:  # the step section's copy, if it made one
            theirs = models.derived(dense_case, args.device, "mamba_ssm", mamba_ssm_model)
        elif args.reference:
            theirs = mamba_ssm_model(ours)
        for batch in args.gen_batches:
            prompt = torch.randint(0, ours.config.vocab_size, (batch, args.prompt_len),
                                   generator=torch.Generator().manual_seed(batch)).to(args.device)
            sides = {"ours": lambda m=ours, p=prompt: m.generate(p, args.new_tokens, cg=args.cg)}
            if theirs is not None:
                sides["mamba_ssm"] = lambda m=theirs, p=prompt: mamba_ssm_generate(m, p, args.new_tokens, cg=True)
            times: dict[str, list[float]] = {name: [] for name in sides}
            tokens = {}
            for rep in range(args.gen_warmup + args.gen_reps):  # the first calls capture the decode graphs
                for name, fn in sides.items():
                    seconds, tokens[name] = _timed(fn, args.device)
                    if rep >= args.gen_warmup:
                        times[name].append(seconds)
            row = {"preset": preset, "variant": variant, "d_state": ours.config.d_states[0], "batch": batch,
                   "prompt": args.prompt_len, "new_tokens": args.new_tokens}
            for name, seconds in times.items():
                median = statistics.median(seconds)
                row[name] = {"seconds": seconds, "median_s": median,
                             "tokens_per_s": batch * args.new_tokens / median}
            if theirs is not None:
                row["ours_over_mamba_ssm_tokens_per_s"] = (row["ours"]["tokens_per_s"]
                                                           / row["mamba_ssm"]["tokens_per_s"])
                # bf16 greedy decoding of two summation orders parts ways after a while: recorded, not judged
                row["same_tokens"] = float((tokens["ours"] == tokens["mamba_ssm"]).float().mean())
            log(f"generate {preset} {variant} b{batch}: ours {row['ours']['tokens_per_s']:.0f} tok/s"
                + (f", mamba-ssm {row['mamba_ssm']['tokens_per_s']:.0f} tok/s" if theirs is not None else ""))
            rows.append(row)
        del theirs
    return rows


# --- kernels: where the device time goes ------------------------------------------------------------------------
def kernel_table(fn, device: torch.device, runs: int, top: int = TOP_KERNELS) -> dict:
    """torch.profiler over `runs` eager calls: the `top` kernels by device time per call (on a CPU, the aten ops
    by self CPU time: the smoke run's stand-in)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    fn()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(runs):
            fn()
        synchronize(device)
    rows = []
    for event in prof.key_averages():
        if cuda and event.device_type != DeviceType.CUDA:
            continue
        us = getattr(event, "self_device_time_total", 0.0) if cuda else event.self_cpu_time_total
        if us > 0:
            rows.append({"name": event.key, "seconds": us / 1e6 / runs, "calls": event.count / runs})
    rows.sort(key=lambda r: -r["seconds"])
    total = sum(r["seconds"] for r in rows)
    for r in rows:
        r["share"] = r["seconds"] / total if total else 0.0
    return {"clock": "device" if cuda else "cpu_self", "total_s": total, "kernels": len(rows), "top": rows[:top]}


def kernels_section(args, preset: str, models: ModelCache) -> list[dict]:
    rows = []
    for mode, seqlen, batch in args.points:
        case = Case(preset, REFERENCE_LEVEL, mode, seqlen, batch, dtype=args.dtype)
        sides = {"ours": make_workload(case, args.device, models).fn}
        if args.reference:
            sides["mamba_ssm"] = reference_workload(case, args.device, models).fn
        for side, fn in sides.items():
            table = kernel_table(fn, args.device, args.profile_runs)
            rows.append({"preset": preset, "mode": mode, "seqlen": seqlen, "batch": batch, "side": side, **table})
            log(f"kernels {case.id} {side}: {table['kernels']} kernels, {table['total_s'] * 1e3:.3f} ms per call")
    return rows


# --- report -----------------------------------------------------------------------------------------------------
def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.3f}"


def markdown(doc: dict) -> str:
    out = ["## perfmamba / mamba-ssm, same weights, one process", "",
           f"{doc['environment'].get('gpu') or 'CPU'}, torch {doc['environment']['torch']}, mamba-ssm "
           f"{doc['environment'].get('mamba_ssm')}, commit {doc['environment'].get('git_commit')}, "
           f"{doc['config']['dtype']}; `{doc['config']['command']}`", ""]
    if doc["step"]:
        clock = doc["step"][0]["ours"]["clock"]
        out += [f"### Prefill and decode step (ours and mamba-ssm's interleaved by round, {clock}; median ms)", "",
                "| preset | point | ours | mamba-ssm | ours / mamba-ssm | logits rel. error |",
                "|---|---|---:|---:|---:|---:|"]
        for r in doc["step"]:
            theirs = r["mamba_ssm"]["median_s"] if r["mamba_ssm"] else None
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}x"
            err = "-" if r["logits_rel_error"] is None else f"{r['logits_rel_error']:.2%}"
            where = f" (process {r['process'] + 1})" if "process" in r else ""
            out.append(f"| {r['preset']}{where} | {r['mode']} b{r['batch']} L{r['seqlen']} | "
                       f"{_ms(r['ours']['median_s'])} | {_ms(theirs)} | {ratio} | {err} |")
    if doc.get("step_over_processes"):
        out += ["", "### The step ratio over processes (each preset alone in a fresh process)", "",
                "| preset | point | processes | ours, median ms | ours / mamba-ssm, median | range |",
                "|---|---|---:|---:|---:|---|"]
        for r in doc["step_over_processes"]:
            ratio, spread = "-", "-"
            if r["ratio_median"] is not None:
                ratio, spread = f"{r['ratio_median']:.3f}x", f"{min(r['ratios']):.3f}-{max(r['ratios']):.3f}"
            out.append(f"| {r['preset']} | {r['mode']} b{r['batch']} L{r['seqlen']} | {r['processes']} | "
                       f"{_ms(r['ours_median_s'])} | {ratio} | {spread} |")
    if doc["generate"]:
        ours = "ours (cg)" if doc["config"]["cg"] else "ours (eager)"
        out += ["", "### Generation, tokens/s (greedy, prompt included; median of calls)", "",
                f"| preset | model | N' | batch | {ours} | mamba-ssm (cg) | ours / mamba-ssm | same tokens |",
                "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in doc["generate"]:
            theirs = "-" if r.get("mamba_ssm") is None else f"{r['mamba_ssm']['tokens_per_s']:.0f}"
            ratio = r.get("ours_over_mamba_ssm_tokens_per_s")
            ratio = "-" if ratio is None else f"{ratio:.3f}x"
            same = "-" if "same_tokens" not in r else f"{r['same_tokens']:.0%}"
            out.append(f"| {r['preset']} | {r['variant']} | {r['d_state']} | {r['batch']} | "
                       f"{r['ours']['tokens_per_s']:.0f} | {theirs} | {ratio} | {same} |")
    for r in doc["kernels"]:
        out += ["", f"### Kernels: {r['preset']} {r['mode']} b{r['batch']} L{r['seqlen']}, {r['side']} "
                    f"({r['kernels']} kernels, {_ms(r['total_s'])} ms {r['clock']} time per call)", "",
                "| kernel | ms per call | calls | share |", "|---|---:|---:|---:|"]
        for k in r["top"]:
            name = k["name"] if len(k["name"]) <= 90 else k["name"][:87] + "..."
            out.append(f"| `{name}` | {_ms(k['seconds'])} | {k['calls']:g} | {k['share']:.1%} |")
    return "\n".join(out) + "\n"


# --- main -------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="directory for vs_mamba_ssm.json and vs_mamba_ssm.md")
    p.add_argument("--quick", action="store_true", help="CPU smoke run: tiny presets, small shapes, our side only")
    p.add_argument("--presets", default=None,
                   help=f"comma-separated presets (default {','.join(PRESETS)}; --quick: {','.join(QUICK_PRESETS)})")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of: " + ", ".join(SECTIONS))
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per step point (after 1 warm-up round)")
    p.add_argument("--processes", type=int, default=1,
                   help="run the step section of each preset in this many fresh processes (default 1: in this one)")
    args = p.parse_args(argv)
    if args.processes < 1:
        raise SystemExit(f"--processes must be at least 1, got {args.processes}")
    args.command = " ".join(["python3 benchmarks/vs_mamba_ssm.py", *(argv if argv is not None else sys.argv[1:])])
    args.device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    # One warm-up round: the graph timers have warmed each call up eagerly and captured it before the rounds.
    args.dtype, args.warmup, args.cg, args.prune_ratio = "bf16", 1, True, 0.5
    args.points = (("prefill", 8192, 8), ("decode", 512, 64))
    args.gen_batches, args.prompt_len, args.new_tokens, args.gen_warmup, args.gen_reps = (1, 64), 128, 128, 1, 3
    args.profile_runs = 3
    args.presets = args.presets.split(",") if args.presets else list(QUICK_PRESETS if args.quick else PRESETS)
    if args.quick:
        args.dtype, args.warmup, args.rounds, args.cg = "fp32", 1, 2, False
        args.points = (("prefill", 64, 2), ("decode", 16, 4))
        args.gen_batches, args.prompt_len, args.new_tokens, args.gen_warmup, args.gen_reps = (1, 4), 8, 6, 0, 1
        args.profile_runs = 1
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown --sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    args.reference = not args.quick
    if args.reference:
        reason = unavailable_reason(args.device)
        if reason is not None:
            raise SystemExit(f"{reason}; --quick runs our side alone on the CPU")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    configure_process(1 if args.quick else None)
    log(f"device {args.device}, presets {args.presets}, sections {args.sections}")
    doc = {"config": {"quick": args.quick, "device": str(args.device), "dtype": args.dtype, "rounds": args.rounds,
                      "warmup": args.warmup, "points": [list(p) for p in args.points], "presets": args.presets,
                      "sections": list(args.sections), "gen_batches": list(args.gen_batches), "prompt": args.prompt_len,
                      "new_tokens": args.new_tokens, "prune_ratio": args.prune_ratio, "cg": args.cg,
                      "mamba_ssm": args.reference, "command": args.command, "processes": args.processes},
           "step": [], "generate": [], "kernels": []}
    if args.processes > 1 and "step" in args.sections:
        doc["step"], doc["step_over_processes"] = step_over_processes(args)
        args.sections = [s for s in args.sections if s != "step"]
    for preset in args.presets if args.sections else ():  # --processes may have left no section to run here
        models = ModelCache(size=4)
        # one model for every section: built here, seeded as the benchmark suite builds it
        dense = Case(preset, "model", dtype=args.dtype)
        models.put(dense, args.device, build_model(preset, device=args.device, dtype=dense.torch_dtype, seed=0))
        for section, run in (("step", step_section), ("generate", generate_section), ("kernels", kernels_section)):
            if section in args.sections:
                doc[section] += run(args, preset, models)
        models.clear()
        gc.collect()
        if args.device.type == "cuda":
            torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_json(args.out / "vs_mamba_ssm.json", doc, kind="vs_mamba_ssm")
    text = markdown(read_json(path))
    atomic_write_text(args.out / "vs_mamba_ssm.md", text)
    print(text)
    log(f"wrote {path} and vs_mamba_ssm.md")
    return doc


if __name__ == "__main__":
    main()
