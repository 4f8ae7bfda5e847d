"""Everything about a profile at once, in a report directory: profile.json, profile.csv, profile.txt (the table)
and the plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perfmamba.profiling.formatting import format_table
from perfmamba.profiling.plots import write_plots
from perfmamba.profiling.result import (
    CSV_COLUMNS,
    CSV_FILE,
    JSON_FILE,
    TEXT_FILE,
    ProfileResult,
    csv_rows,
    csv_text,
    write_profile_json,
)
from perfmamba.results import atomic_write_text


def write_report(result: ProfileResult, out_dir: str | Path, *, plots: bool = True,
                 environment: dict[str, Any] | None = None) -> dict[str, Path]:
    """profile.json, profile.csv, profile.txt (the table) and the plots, in `out_dir`. Returns the paths.
    `environment`: as in `write_profile_json`."""
    out_dir = Path(out_dir)
    files = {
        "json": write_profile_json(result, out_dir / JSON_FILE, environment=environment),
        "csv": atomic_write_text(out_dir / CSV_FILE, csv_text(csv_rows(result), CSV_COLUMNS)),
        "text": atomic_write_text(out_dir / TEXT_FILE, format_table(result)),
    }
    if plots:
        for p in write_plots(result, out_dir):
            files[p.stem] = p
    return files
