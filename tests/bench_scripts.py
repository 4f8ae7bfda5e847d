"""Import a script of benchmarks/ as a module (they are scripts, not a package), for tests of their functions; run
one's CPU smoke mode in a subprocess."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_quick(name: str, out: Path, result: str) -> tuple[subprocess.CompletedProcess, dict]:
    """`benchmarks/<name>.py --quick --out OUT` in a subprocess with Triton interpreted (chosen before triton is first
    imported, hence a process of its own) and no GPU; returns the run and the result file `result` it wrote."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--out", str(out)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    return run, json.loads((out / result).read_text())
