"""Rendering a `Comparison`: a markdown report for a pull-request comment or a CI summary, and a plain-text
table for a terminal. Regressions come first; unchanged benchmarks fold away in the markdown."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from perfmamba.gate.comparison import Comparison, Row

_MARK = {"regressed": "🔴", "improved": "🟢", "unchanged": "⚪", "inconclusive": "🟡", "not assessed": "❔"}
# GitHub rejects comments over 65,536 characters; the rows of a large sweep are cut well before that.
_MAX_NAME = 120


def format_value(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return str(value)
    if unit == "s":
        for scale, suffix in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if abs(value) >= scale:
                return f"{value / scale:.4g} {suffix}"
        return f"{value / 1e-9:.4g} ns"
    if unit == "bytes":
        for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if abs(value) >= scale:
                return f"{value / scale:.4g} {suffix}"
        return f"{value:.0f} B"
    return f"{value:.4g} {unit}".rstrip()


def format_change(ratio: float | None) -> str:
    if ratio is None or not math.isfinite(ratio):
        return "unbounded" if ratio is not None else "–"
    return f"{(ratio - 1) * 100:+.2f}%"


def format_interval(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "–"
    if not math.isfinite(high) or low <= 0:
        return "unbounded"
    if low == high:
        return "exact"
    return f"{(low - 1) * 100:+.2f}% … {(high - 1) * 100:+.2f}%"


def format_p(p: float | None) -> str:
    return "–" if p is None else f"{p:.2g}"


def _summary(comparison: Comparison) -> str:
    c = comparison.counts
    parts = [f"{c[v]} {v}" for v in ("regressed", "improved", "unchanged", "inconclusive", "not assessed") if c[v]]
    if c["missing"]:
        parts.append(f"{c['missing']} missing in NEW")
    if c["added"]:
        parts.append(f"{c['added']} only in NEW")
    if c["skipped"]:
        parts.append(f"{c['skipped']} not comparable")
    return ", ".join(parts) or "nothing to compare"


def _side(role: str, label: str, count: int | None = None) -> str:
    """A side as `BASE (a.json: 12)`; the label is left out where it only repeats the role (`compare`'s
    default)."""
    what = [label] if label != role else []
    if count is not None:
        what.append(str(count))
    return f"{role} ({': '.join(what)})" if what else role


def nothing_compared(comparison: Comparison) -> str | None:
    """One line saying why no benchmark was judged (the case `Comparison.exit_code` fails with
    EXIT_NOTHING_JUDGED), or None where some were."""
    if comparison.judged:
        return None
    in_both = len(comparison.rows) + len(comparison.skipped)
    n_base, n_new = in_both + len(comparison.missing), in_both + len(comparison.added)
    if not n_base or not n_new:
        empty = [_side(role, label) for role, label, n in (("BASE", comparison.base, n_base),
                                                           ("NEW", comparison.new, n_new)) if not n]
        return f"nothing compared: no benchmark in {' or '.join(empty)}"
    if not in_both:
        return (f"nothing compared: no benchmark name is in both {_side('BASE', comparison.base, n_base)} and "
                f"{_side('NEW', comparison.new, n_new)}")
    why = [f"{n} not assessed ({note})" for note, n in _note_counts(comparison.rows).items()]
    if comparison.skipped:
        name, reason = comparison.skipped[0]
        first = f"{name}: {reason}" if len(comparison.skipped) == 1 else f"e.g. {name}: {reason}"
        why.append(f"{len(comparison.skipped)} not comparable ({first})")
    return (f"nothing compared: 0 of {in_both} benchmarks in both {_side('BASE', comparison.base)} and "
            f"{_side('NEW', comparison.new)} could be judged: {'; '.join(why)}")


def _note_counts(rows: Sequence[Row]) -> dict[str, int]:
    return Counter(r.note or r.verdict for r in rows)


def _method(comparison: Comparison) -> str:
    cfg = comparison.config
    conf = f"{1 - cfg.alpha:.0%}"
    fam = f", Holm-adjusted over {comparison.tested} tested" if cfg.correction == "holm" else ""
    return (
        f"change = NEW / BASE − 1 (↑: higher is better; with several processes a side, of the geometric mean of "
        f"the processes' medians). Regressed / improved: the {conf} interval of the ratio lies wholly beyond the "
        f"threshold and its test agrees (p < {cfg.alpha:g}{fam}): Welch's t over processes where a side has "
        f"several, else a bootstrap and Mann-Whitney over rounds. Unchanged: the interval lies within the "
        f"threshold. Inconclusive: neither. Default threshold ±{cfg.default_threshold * 100:g}%."
    )


def _p_header(comparison: Comparison) -> str:
    return "p (Holm)" if comparison.config.correction == "holm" else "p"


def _cells(row: Row) -> list[str]:
    name = row.name if len(row.name) <= _MAX_NAME else row.name[: _MAX_NAME - 1] + "…"
    arrow = " ↑" if row.higher_is_better else ""
    return [
        f"`{name}`{arrow}",
        format_value(row.base_median, row.unit),
        format_value(row.new_median, row.unit),
        format_change(row.ratio),
        format_interval(row.ci_low, row.ci_high),
        f"±{row.threshold * 100:g}%",
        format_p(row.p_adjusted),
        _counts(row),
    ]


def _counts(row: Row) -> str:
    """Samples a side, and the processes they came from where there were several."""
    if row.processes_base > 1 or row.processes_new > 1:
        return f"{row.n_base}/{row.n_new} ({row.processes_base}+{row.processes_new} proc)"
    return f"{row.n_base}/{row.n_new}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(comparison: Comparison, rows: Sequence[Row]) -> list[str]:
    conf = f"{1 - comparison.config.alpha:.0%}"
    header = ["", "benchmark", "BASE", "NEW", "change", f"{conf} interval", "threshold", _p_header(comparison),
              "n", "verdict"]
    with_notes = any(r.note for r in rows)
    if with_notes:
        header.append("note")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        verdict = f"**{r.verdict}**" if r.verdict == "regressed" else r.verdict
        cells = [_MARK[r.verdict], *_cells(r), verdict]
        if with_notes:
            cells.append(r.note)
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    return lines


def to_markdown(comparison: Comparison, *, max_rows: int = 200) -> str:
    """Markdown for a CI comment: summary line, the regressed and improved rows, the rest folded."""
    out = [f"### perfmamba compare: {_summary(comparison)}", "",
           f"**BASE** `{comparison.base}` → **NEW** `{comparison.new}`", ""]
    nothing = nothing_compared(comparison)
    if nothing:
        out += [f"**{_md_escape(nothing)}**", ""]
    flagged = [r for r in comparison.rows if r.verdict in ("regressed", "improved")]
    rest = [r for r in comparison.rows if r.verdict not in ("regressed", "improved")]
    budget = max_rows
    if flagged:
        shown = flagged[:budget]
        out += _md_table(comparison, shown)
        if len(flagged) > len(shown):
            out.append(f"\n… and {len(flagged) - len(shown)} more regressed or improved (see the JSON report)")
        budget -= len(shown)
        out.append("")
    elif comparison.rows:
        out += ["No benchmark changed beyond its threshold.", ""]
    if rest:
        shown = rest[: max(budget, 0)]
        out.append(f"<details><summary>{len(rest)} unchanged, inconclusive or not assessed</summary>\n")
        if shown:
            out += _md_table(comparison, shown)
        if len(rest) > len(shown):
            out.append(f"\n… and {len(rest) - len(shown)} more")
        out += ["", "</details>", ""]
    out += _md_lists(comparison)
    out += [f"<sub>{_method(comparison)}</sub>", ""]
    return "\n".join(out)


def _md_lists(comparison: Comparison) -> list[str]:
    out = []
    if comparison.missing:
        items = []
        for name in comparison.missing:
            hint = f" (renamed to `{comparison.renamed[name]}`?)" if name in comparison.renamed else ""
            items.append(f"- `{name}`{hint}")
        out += [f"**Missing in NEW ({len(comparison.missing)})**", "", *items, ""]
    if comparison.added:
        out += [f"**Only in NEW ({len(comparison.added)})**", "", *(f"- `{n}`" for n in comparison.added), ""]
    if comparison.skipped:
        out += [f"**Not comparable ({len(comparison.skipped)})**", "",
                *(f"- `{n}`: {why}" for n, why in comparison.skipped), ""]
    return out


def _grouped_notes(rows: Sequence[Row], show: int = 3) -> list[str]:
    """Each distinct note once, with the benchmarks it applies to (the first `show` of them)."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        if r.note:
            groups.setdefault(r.note, []).append(r.name)
    if not groups:
        return []
    out = ["", "notes:"]
    for note, names in groups.items():
        more = f", and {len(names) - show} more" if len(names) > show else ""
        out.append(f"  {note}: {', '.join(names[:show])}{more}")
    return out


def to_text(comparison: Comparison) -> str:
    """A plain table for a terminal, every row, then the lists of missing and added benchmarks."""
    conf = f"{1 - comparison.config.alpha:.0%}"
    header = ["verdict", "benchmark", "BASE", "NEW", "change", f"{conf} interval", "threshold",
              _p_header(comparison), "n", "method"]
    table = [header] + [[r.verdict, *_cells(r), r.method] for r in comparison.rows]
    for row in table[1:]:
        row[1] = row[1].replace("`", "")
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"perfmamba compare: {_summary(comparison)}", f"BASE {comparison.base}  ->  NEW {comparison.new}", ""]
    if comparison.rows:
        for row in table:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        lines += _grouped_notes(comparison.rows)
    for title, names in (("missing in NEW", comparison.missing), ("only in NEW", comparison.added)):
        if names:
            lines += ["", f"{title} ({len(names)}):"]
            for name in names:
                hint = f"  (renamed to {comparison.renamed[name]}?)" if name in comparison.renamed else ""
                lines.append(f"  {name}{hint}")
    if comparison.skipped:
        lines += ["", f"not comparable ({len(comparison.skipped)}):"]
        lines += [f"  {name}: {why}" for name, why in comparison.skipped]
    lines += ["", _method(comparison)]
    nothing = nothing_compared(comparison)
    if nothing:
        # Last, below a possibly long list of names: the line a CI log shows when the step fails.
        lines += ["", nothing]
    return "\n".join(lines) + "\n"


def blocking_notes(failed_logs: list[str], processes: int, threshold_failures: list[str]) -> str:
    """What blocks a PR besides a regression, ahead of the table: processes that failed (their logs), and the
    thresholds that the PR's median over its processes fails."""
    out = ""
    if failed_logs:
        out += (f"**The PR's benchmark processes failed in {len(failed_logs)} of {processes}**: see "
                f"{', '.join(failed_logs)}\n\n")
    if threshold_failures:
        out += ("**The PR's benchmarks fail their thresholds (thresholds.toml, median over processes)**:\n\n"
                + "".join(f"- {line}\n" for line in threshold_failures) + "\n")
    return out
