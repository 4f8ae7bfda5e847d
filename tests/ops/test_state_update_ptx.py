"""The Triton decode step compiled for sm_90 on any machine (no GPU needed): the row alignment the host passes
(STATE_ALIGN) is what gives a pruned N' such as 116 vector loads and stores of the state, and rows taken in pairs
(PAIRS) get 16-byte ones. A subprocess: the compiler must not see the interpreter that other test modules may have
chosen for this process."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import inspect, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from perfmamba.ops._state_update_kernel import state_update_kernel as fn

params = list(inspect.signature(fn).parameters)
pairs = sys.argv[2] == "1"
consts = dict(s_sn=1, B_sn=1, C_sn=1, DSTATE=116, BLOCK_M=8 if pairs else 16, BLOCK_N=128,
              STATE_ALIGN=int(sys.argv[1]), PAIRS=pairs, EVEN_M=True, TIE_HDIM=True, DT_SOFTPLUS=True,
              HAS_DT_BIAS=True, HAS_D=True, HAS_Z=False)
sig = {p: "constexpr" if p in consts else ("*bf16" if p.endswith("_ptr") else "i32") for p in params}
sig.update(A_ptr="*fp32", D_ptr="*fp32", dt_bias_ptr="*fp32")
# as the JIT specialises a launch at the 130m shape (64 rows of 116 a head): every pointer 16-byte aligned, the
# batch and head strides multiples of 16 elements, the row stride (116) not
attrs = {(i,): [["tt.divisibility", 16]] for i, p in enumerate(params) if p.endswith("_ptr") or p in ("s_sb", "s_sh")}
src = ASTSource(fn=triton.jit(fn), signature=sig, constexprs={(params.index(k),): v for k, v in consts.items()},
                attrs=attrs)
try:
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 2}).asm["ptx"]
except triton.compiler.errors.CompilationError:  # the kernel's own source: a failure, not a missing compiler
    raise
except Exception as e:  # no CUDA backend or ptxas in this triton build
    print("NO-COMPILER", type(e).__name__, str(e).splitlines()[-1][:200] if str(e) else "")
    sys.exit(0)
print(ptx)
"""


def state_stores(align: int, pairs: bool = False) -> list[str]:
    """The PTX global stores of the kernel at N' = 116 (the only stores besides y's, which are 2-byte)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(align), str(int(pairs))],
                         env={**env, "CUDA_VISIBLE_DEVICES": ""},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    if run.stdout.startswith("NO-COMPILER"):
        pytest.skip(f"triton cannot compile for sm_90 here: {run.stdout.strip()}")
    return re.findall(r"\bst\.global(?:\.\w+)*", run.stdout)


def test_row_alignment_gives_a_pruned_state_vector_stores():
    # rows of 116 bf16 are 8-byte aligned: told so, the 16 x 116 tile on 64 threads stores 8-byte vectors
    aligned, unknown = state_stores(4), state_stores(1)
    assert sum(".v2.b32" in s for s in aligned) == 8, aligned
    assert not any(".v2" in s or ".v4" in s for s in unknown), unknown
    assert len(unknown) >= 4 * (len(aligned) - 1)  # one element a store where a vector held four (y: one store)


def test_paired_rows_give_a_pruned_state_16_byte_stores():
    # two rows of 116 bf16 are 464 bytes, 16-byte aligned: 8 pairs x 128 on 64 threads, two strips, store 16-byte
    # vectors (at 116 unpaired, 8-byte ones at best)
    paired = state_stores(8, pairs=True)
    assert sum(".v4.b32" in s for s in paired) == 4 and not any(".v2" in s for s in paired), paired
