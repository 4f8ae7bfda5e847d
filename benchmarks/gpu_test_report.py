"""Run the GPU-marked tests and write what ran, with versions, to a markdown file (docs/results/ on the H100).

    python benchmarks/gpu_test_report.py --out docs/results/gpu_tests.md [-- extra pytest args]

The GPU status of the project stays visible on machines without a GPU: the file lists every test that ran,
passed, failed or skipped, with the device and library versions.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from perfmamba.results import atomic_write_text, environment


def _pytest(cmd: list[str], timeout_s: float | None) -> int:
    """Run pytest; past `timeout_s`, interrupt it as Ctrl-C would, so that it still reports what ran."""
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        print(f"gpu_test_report: pytest still running after {timeout_s:.0f} s; interrupting it", flush=True)
        proc.send_signal(signal.SIGINT)
        return proc.wait()


def run(out: Path, extra: list[str], timeout_s: float | None = None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu or mamba_ssm",
               f"--junitxml={junit}", "--durations=15", *extra]
        rc = _pytest(cmd, timeout_s)
        cases = ET.parse(junit).getroot().iter("testcase")
        rows = []
        for case in cases:
            if case.get("name") is None:  # the test pytest was running when it was interrupted
                rows.append(("(the test running at the interruption)", "interrupted", float(case.get("time", 0))))
                continue
            status = "passed"
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    message = (node.get("message") or "").strip().splitlines()
                    status = f"{tag}: {message[0][:120] if message else ''}"
            rows.append((f"{case.get('classname')}::{case.get('name')}", status, float(case.get("time", 0))))
    env = environment()
    counts = {k: sum(r[1].startswith(k) for r in rows)
              for k in ("passed", "failure", "error", "skipped", "interrupted")}
    lines = [
        "# GPU test run", "",
        f"- command: `{' '.join(cmd[1:])}` (exit code {rc})",
        f"- device: {env['gpu']}; torch {env['torch']} (CUDA {env['cuda']}); mamba-ssm {env['mamba_ssm']}; "
        f"causal-conv1d {env['causal_conv1d']}; triton {env['triton']}",
        f"- perfmamba {env['perfmamba']} at commit {env['git_commit']}; {env['timestamp']}",
        f"- {counts['passed']} passed, {counts['failure']} failed, {counts['error']} errors, "
        f"{counts['skipped']} skipped" + (", interrupted at the time limit" if counts["interrupted"] else ""), "",
        "| test | result | seconds |", "|---|---|---|",
        *(f"| `{name}` | {status} | {secs:.2f} |" for name, status, secs in rows),
    ]
    atomic_write_text(out, "\n".join(lines) + "\n")
    print(f"wrote {out}: {counts}")
    return rc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/results/gpu_tests.md"))
    parser.add_argument("--timeout-s", type=float, default=None,
                        help="interrupt pytest after this long and report the tests that ran")
    args, extra = parser.parse_known_args()
    sys.exit(run(args.out, [a for a in extra if a != "--"], args.timeout_s))
