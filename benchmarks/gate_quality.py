"""How good is `perfmamba gate`? False alarms on identical code and detections of real kernel changes, measured in
the shape CI runs it: git trees, separate processes, interleaved on one machine.

    python benchmarks/gate_quality.py run --out DIR [--rounds 15] [--grid gpu] [--budget-s 480]
    python benchmarks/gate_quality.py analyse --out DIR[,DIR2] [--processes 3] [--markdown FILE]
    python benchmarks/gate_quality.py compact --out DIR --to FILE.json.xz

`run` checks out the commit (default HEAD) twice as "base" and "base2" (the A/A pair), and once per variant as a
real commit whose op does more of the same kernel work: after computing its result, `ops.selective_scan` /
`ops.ssd_scan` runs the same kernel again over the first 2% or 5% of the time steps, for every (batch, channel):
one more launch whose grid covers the whole GPU like the first, so its cost follows the extra work (plus one
launch). Then it runs round after round, as `perfmamba gate` does: each round runs every tree once, in an order
that reverses every other round. base and
base2 run the whole grid; a variant runs the op-level prefill cases of its Mamba version, the only cases its change
reaches on a GPU (the fused block and model paths call mamba-ssm's fused kernels, not the op).

`analyse` forms gate runs from disjoint runs of `--processes` rounds: A/A is base against base2; a variant is
base against the variant, its other cases taken from base2's processes (the same code), so that every gate run
judges the whole grid and the Holm family is the gate's. It reports, per comparison, the share of gate runs that
exit 1 and of case comparisons flagged, with and without Holm's correction, and the slowdown actually injected
(per case, over all processes), and prints markdown. `compact` keeps a study as its per-process medians (all the
process-level verdicts use), small enough to commit; `analyse` reads either form.
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import statistics
import sys
import tarfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: import the perfmamba beside it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perfmamba.gate.compare import compare  # noqa: E402
from perfmamba.gate.config import GateConfig  # noqa: E402
from perfmamba.gate.readers import Measurement, load_results  # noqa: E402
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
# The time axis of each time-varying argument: selective scan (b, d, L) / (b, [G,] N, L); SSD (b, L, ...).
_PATCH = '''

# gate-quality variant: {percent}% more of the same kernel work ------------------------------------------------
_unchanged_{op} = {op}


def {op}(*args, backend="auto", **kwargs):
    out = _unchanged_{op}(*args, backend=backend, **kwargs)
    length = args[0].shape[{axis}]
    steps = max(1, round({percent} / 100 * length))

    def cut(t):
        if not isinstance(t, Tensor) or t.dim() < 3 or t.shape[{axis}] != length:
            return t
        return t[..., :steps] if {axis} == -1 else t[:, :steps]

    keys = {{k: cut(v) for k, v in kwargs.items() if k not in ("return_last_state", "return_final_states")}}
    _unchanged_{op}(*(cut(a) for a in args), backend=backend, **keys)
    return out
'''


def make_variant(base: Tree, name: str, workdir: Path, repo: Path) -> Tree:
    """A worktree of base's commit with the variant's change committed on top (a real commit, as a PR has)."""
    file, op, percent, _ = VARIANTS[name]
    label = name.replace("+", "").replace("%", "pct")
    tree = prepare_tree(label, base.commit, repo, workdir)
    path = tree.path / file
    path.write_text(path.read_text() + _PATCH.format(op=op, percent=percent, axis=-1 if op == "selective_scan" else 1))
    git(tree.path, "-c", "user.name=gate-quality", "-c", "user.email=gate-quality@localhost", "commit", "-qam",
         f"{op}: {percent}% more of the same kernel work (gate-quality variant)")
    return Tree(label, tree.path, git(tree.path, "rev-parse", "HEAD"), worktree=True)


def run(args: argparse.Namespace) -> int:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    repo = Path(git(Path.cwd(), "rev-parse", "--show-toplevel"))
    base = prepare_tree("base", args.commit, repo, out / "trees")
    trees = {"base": (base, None), "base2": (prepare_tree("base2", args.commit, repo, out / "trees"), None)}
    for name in args.variants:
        tree = make_variant(base, name, out / "trees", repo)
        trees[tree.label] = (tree, VARIANTS[name][3])
    selects = {tree.label: select for tree, select in trees.values()}
    with Launcher(launch=args.launch) as launcher:
        schedule = run_interleaved(
            [tree for tree, _ in trees.values()], args.rounds,
            lambda tree, path: benchmark_args(path, grid=args.grid, select=selects[tree.label], markers="not slow",
                                              extra=("--durations=12",)),
            out, launcher, budget_s=args.budget_s)
        servers = launcher.imports
    meta = {"commit": base.commit, "grid": args.grid, "launch": args.launch, "servers": servers,
            "trees": {label: {"commit": t.commit, "select": sel} for label, (t, sel) in trees.items()},
            "variants": {n: {"op": VARIANTS[n][1], "percent": VARIANTS[n][2]} for n in args.variants},
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
        result["comparisons"][title] = entry
    return result


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
                   help="comma-separated, of: " + ", ".join(VARIANTS))
    r.add_argument("--launch", default="fork", choices=("fork", "spawn"))
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
    if args.command == "run":
        args.variants = [v for v in args.variants.split(",") if v]
        unknown = [v for v in args.variants if v not in VARIANTS]
        if unknown:
            parser.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
        return run(args)
    return analyse(args)


if __name__ == "__main__":
    sys.exit(main())
