"""The table and the plot of a `train_130m.py` result; run it to redraw both from the JSON.

    python3 benchmarks/train_130m_report.py DIR/train_130m_v1.json      # writes .md and .png beside it
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: import the perfmamba beside it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perfmamba.results import atomic_write_text, read_json  # noqa: E402

KIND = "train_130m"


def markdown(doc: dict) -> str:
    contexts, dense = doc["config"]["contexts"], doc["dense"]
    distances = [str(d) for d in doc["config"]["distances"]]
    copies = distances if "copy" in dense else []  # runs before session 10 had no copy probe
    t = doc["training"]
    planned = doc.get("train_config", {}).get("steps", t["steps_done"])
    steps = f"{t['steps_done']} steps" + (f" of {planned} planned (stopped by the time cap: the learning-rate "
                                           "schedule did not finish)" if t.get("stopped_by_time") else "")
    lines = [f"# Mamba-{doc['version']} 130m shape, {doc['tokenizer']['identity']}, seed {doc['seed']}", "",
             f"Corpus {doc['corpus']['id']}; {steps}, {t['tokens_seen']:,} tokens in "
             f"{t['train_time_s']:.0f} s ({t['tokens_per_s']:,.0f} tokens/s); final loss {t['losses'][-1]:.3f}, "
             f"validation perplexity {t['val_perplexity']:.3f}; recall rows {doc['config']['recall_fraction']:g}."
             + (f" On the {len(ref['files'])} stdlib validation files it also held out ({ref['tokens']:,} bytes, "
                f"windows of {ref['seq_len']}): perplexity {ref['perplexity']:.3f}."
                if "perplexity" in (ref := t.get("small_model_reference", {})) else ""),
             "", "Test perplexity by context (change vs dense) and recall exact match by distance"
             + (", copy token accuracy by distance (dense control, the span not shown before: "
                + ", ".join(f"{dense['copy'][d]['control_accuracy']:.3f} at {d}" for d in copies) + ")."
                if copies else "."),
             *(["", "**Incomplete**: the run stopped before its grid did; these are the rows it finished."]
               if doc.get("complete") is False else []), "",
             "| criterion | allocation | calib L | r | achieved | " + " | ".join(f"ppl@{c}" for c in contexts)
             + " | " + " | ".join([f"recall@{d}" for d in distances] + [f"copy@{d}" for d in copies]) + " |",
             "|" + "---|" * (5 + len(contexts) + len(distances) + len(copies))]

    def cells(s: dict) -> list[str]:
        out = []
        for c in contexts:
            p, base = s["perplexity"][str(c)], dense["perplexity"][str(c)]
            out.append(f"{p:.3f}" if s is dense else f"{p:.3f} ({100 * (p / base - 1):+.1f}%)")
        return (out + [f"{s['probe'][d]['exact_match']:.2f}" for d in distances]
                + [f"{s['copy'][d]['accuracy']:.3f}" for d in copies])

    lines.append("| dense | | | 0 | 0 | " + " | ".join(cells(dense)) + " |")
    for r in doc["rows"]:
        if "error" in r:
            lines.append(f"| {r['criterion']} | {r['allocation']} | {r['calib_seqlen']} | {r['ratio']:g} | "
                         f"{r['error']} |")
            continue
        lines.append(f"| {r['criterion']} | {r['allocation']} | {r['calib_seqlen']} | {r['ratio']:g} | "
                     f"{r['achieved_ratio']:.3f} | " + " | ".join(cells(r)) + " |")
    if doc["skipped"]:
        lines += ["", f"Left out for time ({len(doc['skipped'])} cells): "
                  + ", ".join(sorted({f"{s['criterion']}/{s['allocation']}@{s['calib_seqlen']}"
                                      for s in doc["skipped"]}))]
    return "\n".join(lines) + "\n"


def plot(doc: dict, path: Path) -> None:
    """Perplexity change vs dense against r, one panel per context: a colour per criterion, a line style per
    allocation (dotted / dash-dotted: uniform / global calibrated at a window other than the run's --calib-seqlen)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    contexts, long = doc["config"]["contexts"], doc["config"]["calib_seqlen"]
    criteria = list(dict.fromkeys(r["criterion"] for r in doc["rows"]))  # the grid's priority order
    colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(criteria)}
    styles = {("uniform", True): "-", ("global", True): "--", ("uniform", False): ":", ("global", False): "-."}
    fig, axes = plt.subplots(1, len(contexts), figsize=(4 * len(contexts) + 2.5, 3.6), squeeze=False, sharey=True)
    for ax, ctx in zip(axes[0], contexts):
        base, series = doc["dense"]["perplexity"][str(ctx)], {}
        for r in doc["rows"]:
            if "error" not in r:
                key = (r["criterion"], r["allocation"], r["calib_seqlen"])
                series.setdefault(key, []).append((r["ratio"], 100 * (r["perplexity"][str(ctx)] / base - 1)))
        for (criterion, allocation, calib), points in sorted(series.items()):
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, styles.get((allocation, calib == long), "-"), marker="o", markersize=3,
                    color=colours[criterion],
                    label=f"{criterion}/{allocation}" + (f" calib {calib}" if calib != long else ""))
        ax.set(title=f"context {ctx}", xlabel="r (fraction of states removed)", yscale="symlog")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test perplexity change vs dense, %")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")
    fig.suptitle(f"Mamba-{doc['version']} 130m shape ({doc['tokenizer']['identity']}): solid uniform, dashed "
                 "global allocation", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", type=Path, help="a train_130m_v{V}.json")
    args = p.parse_args(argv)
    doc = read_json(args.json, kind=KIND)
    atomic_write_text(args.json.with_suffix(".md"), markdown(doc))
    plot(doc, args.json.with_suffix(".png"))
    print(f"wrote {args.json.with_suffix('.md')} and .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
