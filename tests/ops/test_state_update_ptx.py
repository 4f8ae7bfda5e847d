"""The Triton decode step's LAG option, compiled for sm_90 on any machine (no GPU needed): with LAG 1 both strips'
state loads come before the first store, with LAG 0 they alternate. A subprocess: the compiler must not see the
interpreter that other test modules may have chosen for this process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import inspect, re, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from perfmamba.ops._state_update_kernel import state_update_kernel as fn

params = list(inspect.signature(fn).parameters)
consts = dict(s_sn=1, B_sn=1, C_sn=1, DSTATE=128, BLOCK_M=16, BLOCK_N=64, LAG=int(sys.argv[1]), STATE_ALIGN=8,
              EVEN_M=True, TIE_HDIM=True, DT_SOFTPLUS=True, HAS_DT_BIAS=True, HAS_D=True, HAS_Z=True)
sig = {p: "constexpr" if p in consts else ("*bf16" if p.endswith("_ptr") else "i32") for p in params}
sig.update(A_ptr="*fp32", D_ptr="*fp32", dt_bias_ptr="*fp32")
src = ASTSource(fn=triton.jit(fn), signature=sig, constexprs={(params.index(k),): v for k, v in consts.items()})
try:
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 2}).asm["ptx"]
except Exception as e:  # no CUDA backend or ptxas in this triton build
    print("NO-COMPILER", type(e).__name__, str(e).splitlines()[-1][:200] if str(e) else "")
    sys.exit(0)
print(" ".join("L" if op == "ld" else "S" for op in re.findall(r"\b(ld|st)\.global", ptx)))
"""


def memory_ops(lag: int) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(lag)], env={**env, "CUDA_VISIBLE_DEVICES": ""},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    if run.stdout.startswith("NO-COMPILER"):
        pytest.skip(f"triton cannot compile for sm_90 here: {run.stdout.strip()}")
    return run.stdout.strip()


def first_store_after_loads(ops: str) -> tuple[int, int]:
    """(loads before the first store, loads between the first store run and the next store run)."""
    seq = ops.split()
    first = seq.index("S")
    after = seq[first:]
    resumed = after.index("L") if "L" in after else len(after)
    rest = after[resumed:]
    return first, (rest.index("S") if "S" in rest else len(rest))


def test_lag_one_loads_the_second_strip_before_the_first_store():
    lag0, lag1 = first_store_after_loads(memory_ops(0)), first_store_after_loads(memory_ops(1))
    # N' = 128 in strips of 64: LAG 0 loads strip 0, stores it, then loads strip 1; LAG 1 loads both, then stores
    assert lag1[0] >= lag0[0] + 16, (lag0, lag1)
    assert lag0[1] >= 16, lag0  # LAG 0: a second run of state loads between the two strips' stores
