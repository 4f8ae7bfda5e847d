"""How good is `perfmamba gate`? False alarms on identical code and detections of real kernel changes, measured in
the shape CI runs it: git trees, separate processes, interleaved on one machine.

    python benchmarks/gate_quality.py calibrate --to CAL.json [--grid gpu]       # optional, on the machine
    python benchmarks/gate_quality.py run --out DIR [--rounds 15] [--grid gpu] [--budget-s 480] [--calibration CAL.json]
    python benchmarks/gate_quality.py analyse --out DIR[,DIR2] [--processes 3] [--markdown FILE]
    python benchmarks/gate_quality.py compact --out DIR --to FILE.json.xz

`run` checks out the commit (default HEAD) twice as "base" and "base2" (the A/A pair), and once per variant as a
real commit whose op does more of the same kernel work: after computing its result, `ops.selective_scan` /
`ops.ssd_scan` runs the same kernel again over the first 2% or 5% of the time steps of every sequence, or, with
`--calibration`, over the (time steps, sequences) that `calibrate` found to add 2% or 5% of the op's time on this
machine (a second launch has a fixed cost, so a share of the steps is not the same share of the time). Then it
runs round after round, as `perfmamba gate` does: each round runs every tree once, in an order that reverses every
other round. base and base2 run the whole grid; a variant runs the op-level prefill cases of its Mamba version, the
only cases its change reaches on a GPU (the fused block and model paths call mamba-ssm's fused kernels, not the
op).

`analyse` forms gate runs from disjoint runs of `--processes` rounds: A/A is base against base2; a variant is
base against the variant, its other cases taken from base2's processes (the same code), so that every gate run
judges the whole grid and the Holm family is the gate's. It reports, per comparison, the share of gate runs that
exit 1 and of case comparisons flagged, with and without Holm's correction, the slowdown actually injected (per
case, over all processes), and detection by that measured slowdown, and prints markdown. `compact` keeps a study as
its per-process medians (all the process-level verdicts use), small enough to commit; `analyse` reads either form.
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import statistics
import sys
import tarfile
import time
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: import the perfmamba beside it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perfmamba.gate.compare import compare  # noqa: E402
from perfmamba.gate.config import GateConfig  # noqa: E402
from perfmamba.gate.measurement import Measurement  # noqa: E402
from perfmamba.gate.readers import load_results  # noqa: E402
from perfmamba.gate.run import (  # noqa: E402
    Launcher,
    Tree,
    benchmark_args,
    gate_config,
    git,
    prepare_tree,
    remove_tree,
    run_interleaved,
)
from perfmamba.gate.runs import merge_runs  # noqa: E402
from perfmamba.results import atomic_write_text, write_json  # noqa: E402

# variant -> (module file, dispatcher, percent of extra time steps, cases it runs)
VARIANTS = {
    "scan+20%": ("perfmamba/ops/selective_scan.py", "selective_scan", 20, "mamba1 and op and prefill"),
    "scan+5%": ("perfmamba/ops/selective_scan.py", "selective_scan", 5, "mamba1 and op and prefill"),
    "scan+2%": ("perfmamba/ops/selective_scan.py", "selective_scan", 2, "mamba1 and op and prefill"),
    "ssd+5%": ("perfmamba/ops/ssd.py", "ssd_scan", 5, "mamba2 and op and prefill"),
    "ssd+2%": ("perfmamba/ops/ssd.py", "ssd_scan", 2, "mamba2 and op and prefill"),
}
# The time axis of each time-varying argument: selective scan (b, d, L) / (b, [G,] N, L); SSD (b, L, ...). The batch
# axis is 0 for all of them. `extra` maps B's shape (args[3] of both ops) to the (time steps, batches) of the extra
# work where a calibration sized it (`calibrate`); elsewhere the extra work is `percent`% of the steps, every batch.
_PATCH = '''

# gate-quality variant: {percent}% more of the same kernel work ------------------------------------------------
_unchanged_{op} = {op}
_EXTRA_{op} = {extra!r}


def {op}(*args, backend="auto", **kwargs):
    out = _unchanged_{op}(*args, backend=backend, **kwargs)
    length, batch = args[0].shape[{axis}], args[0].shape[0]
    key = str(tuple(args[3].shape)) if len(args) > 3 else None
    steps, batches = _EXTRA_{op}.get(key, (max(1, round({percent} / 100 * length)), batch))

    def cut(t):
        if not isinstance(t, Tensor) or t.dim() < 3 or t.shape[{axis}] != length or t.shape[0] != batch:
            return t
        return t[:batches, ..., :steps] if {axis} == -1 else t[:batches, :steps]

    keys = {{k: cut(v) for k, v in kwargs.items() if k not in ("return_last_state", "return_final_states")}}
    _unchanged_{op}(*(cut(a) for a in args), backend=backend, **keys)
    return out
'''


def patch_text(op: str, percent: float, extra: dict | None = None) -> str:
    return _PATCH.format(op=op, percent=percent, axis=-1 if op == "selective_scan" else 1, extra=extra or {})


def make_variant(base: Tree, name: str, workdir: Path, repo: Path, extra: dict | None = None) -> Tree:
    """A worktree of base's commit with the variant's change committed on top (a real commit, as a PR has)."""
    file, op, percent, _ = VARIANTS[name]
    label = name.replace("+", "").replace("%", "pct")
    tree = prepare_tree(label, base.commit, repo, workdir)
    path = tree.path / file
    path.write_text(path.read_text() + patch_text(op, percent, extra))
    git(tree.path, "-c", "user.name=gate-quality", "-c", "user.email=gate-quality@localhost", "commit", "-qam",
         f"{op}: {percent}% more of the same kernel work (gate-quality variant)")
    return Tree(label, tree.path, git(tree.path, "rev-parse", "HEAD"), worktree=True)


# Calibration: size each variant's extra work to a share of its op's time -----------------------------------------
_STEPS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def calibrate(args: argparse.Namespace) -> int:
    """In one process on this machine, time each op-level prefill case's op with candidate extra work ((time steps,
    batches) of the same call, as the variant makes it) against the op alone, interleaved, as CUDA graphs; keep, per
    target percent, the candidate whose extra time is nearest to it. A second launch has a fixed cost (on the H200
    ~13% of a 0.1 ms scan at any share of the steps), so "p% of the steps" is not "p% of the time"; calibrated
    variants are. Where no candidate comes near, the cross-process study reports the slowdown as measured."""
    import torch

    from perfmamba import ops
    from perfmamba.bench.cases import get_grid
    from perfmamba.bench.workloads import default_device, op_arguments, scan_op
    from perfmamba.timing import paired_ratio, time_interleaved

    device = default_device()
    targets = [float(t) for t in args.targets.split(",")]
    table = {str(t): {} for t in targets}
    measured = []
    for case in get_grid(args.grid).cases(level="op", mode="prefill"):
        op = scan_op(case)
        call_args, kwargs = op_arguments(op, case, device)
        key = str(tuple(call_args[3].shape))
        length = case.seqlen
        candidates = [(s, b) for s in _STEPS if s <= length // 4 for b in sorted({1, case.batch})]
        shares = {}
        fn = getattr(ops, op)
        with torch.inference_mode():
            for steps, batches in candidates:
                namespace = {"Tensor": torch.Tensor, op: fn}
                exec(patch_text(op, 0, {key: (steps, batches)}), namespace)
                times = time_interleaved({"op": partial(fn, *call_args, **kwargs),
                                          "variant": partial(namespace[op], *call_args, **kwargs)},
                                         device, rounds=args.rounds, warmup=2)
                shares[(steps, batches)] = paired_ratio(times["variant"], times["op"]) - 1
        for t in targets:
            steps, batches = min(shares, key=lambda c: abs(shares[c] - t / 100))
            table[str(t)].setdefault(op, {})[key] = (steps, batches)
            print(f"{case.id}: +{t:g}% -> {steps} steps x {batches} batches, measured {shares[steps, batches]:+.2%}",
                  flush=True)
        measured.append({"case": case.id, "op": op, "key": key,
                         "shares": [[s, b, v] for (s, b), v in shares.items()]})
    write_json(args.to, {"grid": args.grid, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
                         else "cpu", "targets": targets, "extra": table, "measured": measured},
               kind="gate_quality_calibration")
    print(f"wrote {args.to}")
    return 0


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()  # --budget-s counts from here: making the worktrees is part of it
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    repo = Path(git(Path.cwd(), "rev-parse", "--show-toplevel"))
    base = prepare_tree("base", args.commit, repo, out / "trees")
    trees = {"base": (base, None), "base2": (prepare_tree("base2", args.commit, repo, out / "trees"), None)}
    calibration = json.loads(args.calibration.read_text()) if args.calibration else None
    for name in args.variants:
        extra = calibration["extra"].get(f"{float(VARIANTS[name][2])}", {}).get(VARIANTS[name][1]) if calibration \
            else None
        tree = make_variant(base, name, out / "trees", repo, extra)
        trees[tree.label] = (tree, VARIANTS[name][3])
    selects = {tree.label: select for tree, select in trees.values()}
    with Launcher(launch=args.launch) as launcher:
        schedule = run_interleaved(
            [tree for tree, _ in trees.values()], args.rounds,
            lambda tree, path: benchmark_args(path, grid=args.grid, select=selects[tree.label], markers="not slow",
                                              extra=("--durations=12",)),
            out, launcher, budget_s=args.budget_s - (time.monotonic() - started))
        servers = launcher.imports
    meta = {"commit": base.commit, "grid": args.grid, "launch": args.launch, "servers": servers,
            "trees": {label: {"commit": t.commit, "select": sel} for label, (t, sel) in trees.items()},
            "variants": {n: {"op": VARIANTS[n][1], "percent": VARIANTS[n][2]} for n in args.variants},
            "calibration": calibration,
            "processes": [{"tree": r.tree, "round": r.index, "rc": r.rc, "seconds": r.seconds,
                           "results": Path(r.results).name if r.results else None} for r in schedule.records]}
    write_json(out / "study.json", meta, kind="gate_quality_run")
    with tarfile.open(out / "runs.tar.xz", "w:xz") as tar:
        for sub in ("runs", "logs"):
            tar.add(out / sub, arcname=sub)
    for tree, _ in trees.values():
        remove_tree(tree, repo)
    print(f"wrote {out / 'study.json'} and {out / 'runs.tar.xz'}")
    return 0


# Analysis -----------------------------------------------------------------------------------------------------
def _runs(out: Path, meta: dict, label: str) -> list[dict]:
    """Each finished process of tree `label`, in round order: its results by benchmark (from its result file, or
    from the per-process medians of a compact study, which is all the process-level verdicts use)."""
    done = sorted((p for p in meta["processes"] if p["tree"] == label and p["results"]), key=lambda p: p["round"])
    if "medians" in meta:
        names, units, clocks = meta["names"], meta["units"], meta["clocks"]
        return [{names[i]: Measurement(name=names[i], unit=units[i], median=v, samples=(v,), clock=clocks[i])
                 for i, v in enumerate(meta["medians"][p["results"]]) if v is not None} for p in done]
    return [load_results(out / "runs" / p["results"]) for p in done]


def compact(out: Path, path: Path) -> None:
    """The study folder's metadata and every process's median per benchmark, xz-compressed (a few tens of KB):
    enough to recompute every process-level verdict and injected slowdown."""
    meta = json.loads((out / "study.json").read_text())
    runs = {p["results"]: load_results(out / "runs" / p["results"]) for p in meta["processes"] if p["results"]}
    names = sorted({n for r in runs.values() for n in r})
    first = {n: next(r[n] for r in runs.values() if n in r) for n in names}
    meta.update(names=names, units=[first[n].unit for n in names], clocks=[first[n].clock for n in names],
                medians={f: [statistics.median(r[n].samples) if n in r and r[n].has_samples else None for n in names]
                         for f, r in runs.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(json.dumps(meta).encode()))


def _load_study(spec: Path) -> tuple[Path, dict]:
    if spec.suffix == ".xz":
        return spec.parent, json.loads(lzma.decompress(spec.read_bytes()))
    if not (spec / "runs").is_dir() and (spec / "runs.tar.xz").is_file():
        with tarfile.open(spec / "runs.tar.xz") as tar:
            tar.extractall(spec, filter="data")
    return spec, json.loads((spec / "study.json").read_text())


def _log_mean_ratio(base: list[dict], new: list[dict], name: str) -> float:
    def gm(runs):
        meds = [statistics.median(r[name].samples) for r in runs if name in r]
        return math.exp(statistics.fmean(math.log(v) for v in meds))

    return gm(new) / gm(base)


def _gate_runs(base: list[dict], new: list[dict], filler: list[dict] | None, k: int, config: GateConfig):
    """Disjoint gate runs of k processes a side; a variant's missing cases filled from `filler` processes."""
    out = []
    for i in range(min(len(base), len(new)) // k):
        b = base[i * k:(i + 1) * k]
        n = new[i * k:(i + 1) * k]
        if filler is not None:
            n = [{**filler[i * k + j], **run} for j, run in enumerate(n)]
        out.append(compare(merge_runs(b), merge_runs(n), config))
    return out


def _rates(runs: list) -> dict:
    cases = sum(len(c.rows) for c in runs)
    return {"gate_runs": len(runs), "exit_1": sum(c.exit_code() == 1 for c in runs),
            "cases_compared": cases, "cases_flagged": sum(len(c.regressions) for c in runs),
            "improved": sum(len(c.by_verdict("improved")) for c in runs),
            "inconclusive": sum(len(c.by_verdict("inconclusive")) for c in runs)}


def _study(out: Path, k: int, configs: dict) -> dict:
    """Counts of one study (a folder, or its compact .json.xz): its own gate runs, formed within it (one
    machine, one run of the schedule)."""
    out, meta = _load_study(out)
    base, base2 = _runs(out, meta, "base"), _runs(out, meta, "base2")
    result = {"process_seconds": {label: statistics.median(p["seconds"] for p in meta["processes"]
                                                           if p["tree"] == label) for label in meta["trees"]},
              "wall_s": sum(p["seconds"] for p in meta["processes"]), "rounds": len(base), "comparisons": {}}
    comparisons = {"A/A": ("base2", None)}
    for name in meta["variants"]:
        comparisons[name] = (name.replace("+", "").replace("%", "pct"), name)
    for title, (label, variant) in comparisons.items():
        new = _runs(out, meta, label)
        entry = {corr: _rates(_gate_runs(base, new, base2 if variant else None, k, cfg))
                 for corr, cfg in configs.items()}
        if variant:
            names = sorted(set(new[0]) & set(base[0])) if new else []
            entry["injected"] = {n: _log_mean_ratio(base, new, n) - 1 for n in names if n.count("::") == 1}
            flagged = dict.fromkeys(entry["injected"], 0)
            for c in _gate_runs(base, new, base2, k, configs["holm"]):
                for r in c.regressions:
                    flagged[r.name] = flagged.get(r.name, 0) + 1
            entry["flagged_per_case"] = flagged
            entry["gate_runs_per_case"] = len(base) // k if len(new) >= len(base) else len(new) // k
        result["comparisons"][title] = entry
    return result


_BINS = (0.015, 0.03, 0.04, 0.06, 0.09)  # edges of the measured-slowdown bins of the detection table


def _detection_table(studies) -> list[str]:
    """Case comparisons flagged (Holm) by the slowdown each case actually measured, over all variants and
    studies: "caught at 5%" is read off the row around 5%, whatever the variant's nominal size."""
    edges = (-math.inf, *_BINS, math.inf)
    counts = [[0, 0, 0] for _ in range(len(edges) - 1)]  # cases, comparisons, flagged
    for study in studies:
        for entry in study["comparisons"].values():
            for name, slowdown in entry.get("injected", {}).items():
                i = next(j for j in range(len(edges) - 1) if edges[j] <= slowdown < edges[j + 1])
                counts[i][0] += 1
                counts[i][1] += entry["gate_runs_per_case"]
                counts[i][2] += entry["flagged_per_case"][name]
    lines = ["| measured slowdown of the case | cases | case comparisons | flagged (Holm) |", "|---|---|---|---|"]
    for (lo, hi), (cases, comparisons, flagged) in zip(zip(edges, edges[1:]), counts):
        label = f"under {hi:.1%}" if lo == -math.inf else f"{lo:.1%} and more" if hi == math.inf \
            else f"{lo:.1%} to {hi:.1%}"
        if cases:
            lines.append(f"| {label} | {cases} | {comparisons} | {flagged} ({flagged / max(comparisons, 1):.0%}) |")
    return lines


def analyse(args: argparse.Namespace) -> int:
    dirs = [Path(d) for d in str(args.out).split(",")]
    grid = _load_study(dirs[0])[1]["grid"]
    device_class = args.device_class or ("cpu" if grid == "quick" else "h200")
    config = gate_config(argparse.Namespace(threshold=None, thresholds_file=None), device_class)
    configs = {"holm": config, "none": GateConfig(**{**config.__dict__, "correction": "none"})}
    studies = {str(d): _study(d, args.processes, configs) for d in dirs}
    summary = {"device_class": device_class, "processes_per_side": args.processes,
               "thresholds": config.thresholds, "default_threshold": config.default_threshold, "studies": studies}
    titles = list(next(iter(studies.values()))["comparisons"])
    lines = []
    for title in titles:
        total = {corr: {} for corr in configs}
        for study in studies.values():
            for corr in configs:
                for key, value in study["comparisons"][title][corr].items():
                    total[corr][key] = total[corr].get(key, 0) + value
        h, n = total["holm"], total["none"]
        lines.append(f"| {title} | {h['gate_runs']} | {h['exit_1']} | {h['cases_flagged']} / {h['cases_compared']} "
                     f"| {n['exit_1']} | {n['cases_flagged']} / {n['cases_compared']} | {h['inconclusive']} |")
    table = ["| comparison | gate runs | exit 1 (Holm) | cases flagged (Holm) | exit 1 (no correction) | "
             "cases flagged (no correction) | inconclusive (Holm) |", "|---|---|---|---|---|---|---|", *lines]
    for title in titles:
        for where, study in studies.items():
            entry = study["comparisons"][title]
            if "injected" in entry:
                table += ["", f"{title} ({where}): slowdown injected per case (all processes) and gate runs "
                              "flagging it:", ""]
                table += [f"- `{n.split('[')[-1].rstrip(']')}`: {v:+.2%}, flagged in "
                          f"{entry['flagged_per_case'][n]}" for n, v in sorted(entry["injected"].items())]
    table += ["", *_detection_table(studies.values())]
    text = "\n".join(table) + "\n"
    if args.summary:
        write_json(args.summary, summary, kind="gate_quality")
    if args.markdown:
        atomic_write_text(args.markdown, text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--commit", default="HEAD")
    r.add_argument("--grid", default=None)
    r.add_argument("--rounds", type=int, default=15)
    r.add_argument("--budget-s", type=float, default=float("inf"))
    r.add_argument("--variants", default="scan+5%,scan+2%,ssd+5%,ssd+2%",
                   help="comma-separated, of: " + ", ".join(VARIANTS).replace("%", "%%"))  # argparse formats help
    r.add_argument("--launch", default="fork", choices=("fork", "spawn"))
    r.add_argument("--calibration", type=Path, default=None,
                   help="size each variant's extra work by this `calibrate` output (default: p%% of the steps)")
    k = sub.add_parser("calibrate", help="size the variants' extra work to a share of each op's time, here")
    k.add_argument("--grid", default=None)
    k.add_argument("--to", type=Path, required=True)
    k.add_argument("--targets", default="5,2", help="comma-separated percents of the op's time")
    k.add_argument("--rounds", type=int, default=7)
    a = sub.add_parser("analyse")
    a.add_argument("--out", required=True, help="a study folder, or several comma-separated (one per machine)")
    a.add_argument("--processes", type=int, default=3, help="processes a side per gate run")
    a.add_argument("--device-class", default=None, help="thresholds.toml section (default: h200, cpu for quick)")
    a.add_argument("--markdown", type=Path, default=None)
    a.add_argument("--summary", type=Path, default=None, help="write the counts as JSON here")
    c = sub.add_parser("compact", help="a study folder's per-process medians as one small .json.xz")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--to", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "compact":
        compact(args.out, args.to)
        return 0
    if args.command == "calibrate":
        return calibrate(args)
    if args.command == "run":
        args.variants = [v for v in args.variants.split(",") if v]
        unknown = [v for v in args.variants if v not in VARIANTS]
        if unknown:
            parser.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
        return run(args)
    return analyse(args)


if __name__ == "__main__":
    sys.exit(main())
