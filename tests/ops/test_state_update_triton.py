"""The Triton decode step (backend "triton" of selective_state_update) against the reference, at every N' 1..128.

On the CPU the kernel runs in Triton's interpreter, which needs $TRITON_INTERPRET=1 before the process first
imports triton: Triton jits its own helpers (tl.zeros, tl.sum) at that import, compiled or interpreted for good.
So this module sets the variable before importing triton, on machines without a GPU only (on a GPU machine it
would turn every Triton kernel of the session, mamba-ssm's included, into interpreted ones). Where triton was
imported first anyway (a GPU machine, or another test module), the CPU tests skip here and
`test_cpu_tests_in_a_fresh_process` runs them in a subprocess with the variable set from the start.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from perfmamba.ops import resolve  # noqa: E402
from perfmamba.ops.registry import BackendUnavailableError  # noqa: E402
from perfmamba.ops.selective_scan import selective_state_update_ref  # noqa: E402

pytest.importorskip("triton")
from perfmamba.ops import state_update_triton  # noqa: E402 - needs triton, skipped above without it

NO_INTERPRETER = state_update_triton.interpreter_problem()
interpreted = pytest.mark.skipif(NO_INTERPRETER is not None, reason=f"run in a fresh process: {NO_INTERPRETER}")
# mamba-ssm's tests/ops/triton/test_selective_state_update.py
TOL = {torch.float32: dict(rtol=3e-4, atol=1e-3), torch.bfloat16: dict(rtol=1e-2, atol=5e-2)}
LAYOUTS = ("mamba1", "mamba2", "mamba2_tied")


def make_inputs(layout: str, batch: int, heads: int, dim: int, dstate: int, groups: int, *, seed: int,
                device: str = "cpu", dtype: torch.dtype = torch.float32, D: bool = True, z: bool = True,
                dt_bias: bool = True, softplus: bool = True, padded_rows: bool = False) -> tuple[tuple, dict]:
    """Arguments of one decode step, as the models pass them: A, D, dt_bias fp32, activations in `dtype`.
    "mamba2_tied": per-head dt, A, D, dt_bias expanded with stride 0 (the Mamba-2 model's call). `padded_rows`:
    the state is a view whose rows are 3 elements longer than N' (strides that are not multiples of anything)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    def act(t):
        return t.to(device=device, dtype=dtype)

    def weight(t):
        return t.to(device)

    h = 1 if layout == "mamba1" else heads
    lead = (batch, dim) if layout == "mamba1" else (batch, h, dim)
    full = randn(*lead, dstate + (3 if padded_rows else 0))
    state = act(full)[..., :dstate]
    x = act(randn(*lead))
    # with softplus: dt as the model's projections give it; without: small positive steps (a negative one grows)
    step = (lambda *s: randn(*s, scale=0.5) - 2.0) if softplus else (lambda *s: torch.rand(*s, generator=g) * 0.2)
    if layout == "mamba2_tied":
        dt = act(step(batch, h))[..., None].expand(-1, -1, dim)
        A = weight(-torch.exp(torch.rand(h, generator=g)))[:, None, None].expand(-1, dim, dstate)
        D_, bias = (weight(randn(h, scale=s))[:, None].expand(-1, dim) for s in (1.0, 0.1))
    else:
        shape = lead[1:]
        dt, A = act(step(*lead)), weight(-torch.exp(torch.rand(*shape, dstate, generator=g) * 2 - 1))
        D_, bias = weight(randn(*shape)), weight(randn(*shape, scale=0.1))
    bc = (batch, dstate) if layout == "mamba1" else (batch, groups, dstate)
    B, C = act(randn(*bc)), act(randn(*bc))
    kwargs = dict(D=D_ if D else None, z=act(randn(*lead)) if z else None, dt_bias=bias if dt_bias else None,
                  dt_softplus=softplus)
    return (state, x, dt, A, B, C), kwargs


def check(args: tuple, kwargs: dict, **config) -> None:
    state, *rest = args
    want_state = state.clone()
    want = selective_state_update_ref(want_state, *rest, **kwargs)
    got = state_update_triton.selective_state_update_triton(state, *rest, **kwargs, **config)
    tol = TOL[state.dtype]
    assert got.dtype == want.dtype and got.shape == want.shape
    torch.testing.assert_close(got, want, **tol, msg=lambda m: f"out, N'={state.shape[-1]}: {m}")
    torch.testing.assert_close(state, want_state, **tol, msg=lambda m: f"state, N'={state.shape[-1]}: {m}")


@interpreted
@pytest.mark.parametrize("dstate", range(1, 129))
def test_every_dstate(dstate):
    """Every N' the pruning can produce, in the Mamba-2 model's layout (tied) and Mamba-1's, all optionals on;
    dim 3 is no multiple of any BLOCK_M, so the row mask is exercised too."""
    layout = "mamba1" if dstate % 2 else "mamba2_tied"
    check(*make_inputs(layout, 1, 2, 3, dstate, 1, seed=dstate))


@st.composite
def cases(draw):
    layout = draw(st.sampled_from(LAYOUTS))
    groups = 1 if layout == "mamba1" else draw(st.sampled_from([1, 2]))
    heads = groups * draw(st.integers(1, 2))
    dstate = draw(st.one_of(st.integers(1, 128), st.sampled_from([1, 12, 16, 36, 88, 116, 128])))
    dims = dict(batch=draw(st.integers(1, 2)), heads=heads, dim=draw(st.sampled_from([1, 4, 7, 16])),
                dstate=dstate, groups=groups)
    flags = dict(D=draw(st.booleans()), z=draw(st.booleans()), dt_bias=draw(st.booleans()),
                 softplus=draw(st.booleans()), padded_rows=draw(st.booleans()))
    return layout, dims, flags, draw(st.sampled_from([torch.float32, torch.bfloat16]))


@interpreted
@settings(max_examples=60, deadline=None)
@given(case=cases(), seed=st.integers(0, 2**31 - 1))
@example(case=("mamba2", dict(batch=2, heads=4, dim=7, dstate=116, groups=2),
               dict(D=False, z=False, dt_bias=False, softplus=False, padded_rows=True), torch.bfloat16), seed=0)
def test_matches_reference(case, seed):
    layout, dims, flags, dtype = case
    check(*make_inputs(layout, **dims, seed=seed, dtype=dtype, **flags))


@interpreted
@pytest.mark.parametrize("config", [(1, 1, 1), (4, 32, 1), (16, 8, 2), (4, 64, 1), (2, 4, 1)])
def test_any_block_config(config):
    """Blocks smaller than the rows or the state (several programs over dim, several strips, a masked tail)
    and larger than both: the tiling must not change the result."""
    check(*make_inputs("mamba2", 2, 2, 5, 37, 2, seed=1), config=config)


@interpreted
@settings(max_examples=60, deadline=None)
@given(case=cases(), block_m=st.sampled_from([1, 2, 4, 16]), block_n=st.sampled_from([1, 4, 16, 32, 64, 128, 256]),
       pairs=st.booleans(), seed=st.integers(0, 2**31 - 1))
@example(case=("mamba2_tied", dict(batch=1, heads=2, dim=7, dstate=127, groups=1),
               dict(D=True, z=True, dt_bias=True, softplus=True, padded_rows=True), torch.bfloat16),
         block_m=4, block_n=16, pairs=False, seed=0)  # 8 strips, the last one masked, rows masked
@example(case=("mamba2_tied", dict(batch=1, heads=2, dim=16, dstate=116, groups=1),
               dict(D=True, z=True, dt_bias=True, softplus=True, padded_rows=False), torch.bfloat16),
         block_m=8, block_n=64, pairs=True, seed=0)  # paired: strips in the first row, across both, in the second
@example(case=("mamba1", dict(batch=2, heads=1, dim=4, dstate=12, groups=1),
               dict(D=True, z=True, dt_bias=True, softplus=True, padded_rows=False), torch.float32),
         block_m=1, block_n=16, pairs=True, seed=0)  # untied A and dt: a strip across both rows, a masked one
def test_any_tile_matches_reference(case, block_m, block_n, pairs, seed):
    """Any tile, rows paired or not, in any layout: a strip stored at another's offset, updated with another
    strip's B, C or A, a row block given another's x, dt, D or z, or a column given the other row of its pair's,
    shows as a wrong state or output. Where rows cannot pair (odd dim, padded rows) pairing is refused."""
    layout, dims, flags, dtype = case
    args, kwargs = make_inputs(layout, **dims, seed=seed, dtype=dtype, **flags)
    config = (block_m, block_n, 1, int(pairs))
    if pairs and (dims["dim"] % 2 or flags["padded_rows"]):
        with pytest.raises(ValueError, match="pairs rows, which needs contiguous rows and an even dim"):
            check(args, kwargs, config=config)
    else:
        check(args, kwargs, config=config)


@interpreted
@pytest.mark.parametrize("config", [(16, 64), (16, 64, 2, 2), (16, 64, 2, 0, 1), (16, 0, 2), (16, 64, 2.0),
                                    (16, 64, True)])
def test_rejects_a_malformed_config(config):
    with pytest.raises(ValueError, match=r"config must be \(BLOCK_M, BLOCK_N, num_warps\[, pairs 0/1\]\), positive"):
        check(*make_inputs("mamba2", 1, 1, 4, 8, 1, seed=0), config=config)


@pytest.mark.parametrize(("dstate", "dtype", "padded", "dim", "want"), [
    (68, torch.bfloat16, False, 64, True), (76, torch.bfloat16, False, 64, True),  # 3 strips of 64 a pair, not 4
    (36, torch.bfloat16, False, 64, True), (44, torch.bfloat16, False, 64, True),  # 3 strips of 32 a pair, not 4
    (66, torch.float32, False, 64, True),
    (116, torch.bfloat16, False, 64, False), (60, torch.bfloat16, False, 64, False),  # as many strips either way
    (128, torch.bfloat16, False, 64, False), (88, torch.bfloat16, False, 64, False),  # rows already 16-byte
    (68, torch.float32, False, 64, False), (132, torch.bfloat16, False, 64, False),  # aligned; not measured
    (68, torch.bfloat16, True, 64, False), (68, torch.bfloat16, False, 7, False),  # not contiguous; odd dim
    (12, torch.bfloat16, False, 64, False),  # Mamba-1's N: not measured paired
    (114, torch.bfloat16, False, 64, False),  # two rows of 228 bytes are still not 16-byte aligned
])
def test_pairs_rows_only_where_pairs_align(dstate, dtype, padded, dim, want):
    (state, *_), _ = make_inputs("mamba2_tied", 1, 1, dim, dstate, 1, seed=0, dtype=dtype, padded_rows=padded)
    assert state_update_triton.pairs_rows(state.unsqueeze(1) if state.dim() == 3 else state) is want


@interpreted
def test_registered_as_triton_backend():
    x = torch.zeros(1)
    name, fn = resolve("selective_state_update", "triton", x)
    assert name == "triton" and fn is state_update_triton.selective_state_update_triton


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    args, kwargs = make_inputs("mamba1", 1, 1, 2, 4, 1, seed=0)
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET=1"):
        state_update_triton.selective_state_update_triton(*args, **kwargs)
    if not torch.cuda.is_available():
        assert "TRITON_INTERPRET" in state_update_triton.unavailable_reason()


@interpreted
def test_rejects_mismatched_shapes():
    (state, x, dt, A, B, C), kwargs = make_inputs("mamba2", 1, 2, 4, 8, 1, seed=0)
    with pytest.raises(ValueError, match=r"B must be \(1, 1, 8\)"):
        state_update_triton.selective_state_update_triton(state, x, dt, A, B[..., :5], C, **kwargs)


@pytest.mark.skipif(NO_INTERPRETER is None, reason="the interpreter runs in this process: the tests above ran")
def test_cpu_tests_in_a_fresh_process():
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not gpu", __file__],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " skipped" in run.stdout  # ran the CPU tests, skipped this one


def test_default_config_follows_dstate():
    """One strip of 128 columns above N' = 80 (the H200 sweeps' fastest there), strips of 64 or 32 below, and no
    more rows than the head has."""
    assert state_update_triton.default_config(64, 116) == (16, 128, 2)
    assert state_update_triton.default_config(64, 128) == (16, 128, 2)
    assert state_update_triton.default_config(64, 88) == (16, 128, 2)
    assert state_update_triton.default_config(64, 81) == (16, 128, 2)
    assert state_update_triton.default_config(64, 80) == (32, 64, 2)  # a masked strip of 64: twice the rows
    assert state_update_triton.default_config(64, 68) == (32, 64, 2)
    assert state_update_triton.default_config(64, 52) == (32, 64, 2)
    assert state_update_triton.default_config(64, 64) == (16, 64, 2)
    assert state_update_triton.default_config(64, 36) == (32, 32, 2)
    assert state_update_triton.default_config(64, 12) == (64, 16, 4)
    assert state_update_triton.default_config(64, 3)[1] == 4
    assert state_update_triton.default_config(1536, 16) == (128, 16, 4)
    assert state_update_triton.default_config(4, 128)[0] == 4
    assert state_update_triton.default_config(64, 256) == (16, 128, 2)  # two strips
    assert state_update_triton.default_config(64, 68, pairs=True) == (16, 64, 2)  # 16 pairs, strips of 64
    assert state_update_triton.default_config(64, 36, pairs=True) == (32, 32, 2)
    assert state_update_triton.default_config(4, 36, pairs=True)[0] == 2


def test_chosen_config_pairs_where_the_sweep_did():
    (state, *_), _ = make_inputs("mamba2_tied", 1, 2, 64, 68, 1, seed=0, dtype=torch.bfloat16)
    assert state_update_triton.chosen_config(state) == (16, 64, 2, 1)
    (state, *_), _ = make_inputs("mamba2_tied", 1, 2, 64, 116, 1, seed=0, dtype=torch.bfloat16)
    assert state_update_triton.chosen_config(state) == (16, 128, 2, 0)


CORNERS = (1, 12, 16, 36, 88, 116, 128)


@pytest.mark.gpu
@pytest.mark.parametrize("first", range(1, 129, 16))  # 8 runs of 16 N': xdist compiles them side by side
def test_gpu_every_dstate_bf16(first):
    """Compiled, on the GPU: every N' 1..128 in bf16 (the model's dtype) in the model's Mamba-2 layout at a
    model-like head size (each N' is a compile of its own)."""
    for dstate in range(first, first + 16):
        check(*make_inputs("mamba2_tied", 3, 4, 64, dstate, 2, seed=dstate, device="cuda", dtype=torch.bfloat16))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_corners_in_every_layout(dtype):
    """N' at the corners in the other layouts (Mamba-1; Mamba-2 untied, without the optional inputs, padded
    rows), and the tied Mamba-2 layout in fp32."""
    for dstate in CORNERS:
        if dtype == torch.float32:
            check(*make_inputs("mamba2_tied", 3, 4, 64, dstate, 2, seed=dstate, device="cuda", dtype=dtype))
        check(*make_inputs("mamba1", 3, 1, 100, dstate, 1, seed=dstate, device="cuda", dtype=dtype))
        check(*make_inputs("mamba2", 2, 4, 7, dstate, 2, seed=dstate, device="cuda", dtype=dtype, D=False,
                           z=False, dt_bias=False, softplus=False, padded_rows=True))


@pytest.mark.gpu
@pytest.mark.parametrize("config", [None, (8, 32, 2), (16, 16, 1), (8, 128, 2, 1), (4, 64, 1, 1)])
def test_gpu_many_strips(config):
    """Compiled: the default and tiles of several strips, rows paired or not, at the corner N', global
    allocation's uneven N' and N' above 128 (Mamba-2 allows 256), in the model's bf16 Mamba-2 layout and in
    Mamba-1's untied one with a row mask (dim 100)."""
    for dstate in (*CORNERS, 52, 68, 84, 127, 256):
        check(*make_inputs("mamba2_tied", 3, 4, 64, dstate, 2, seed=dstate, device="cuda", dtype=torch.bfloat16),
              config=config)
        check(*make_inputs("mamba1", 3, 1, 100, dstate, 1, seed=dstate, device="cuda", dtype=torch.bfloat16),
              config=config)


@pytest.mark.gpu
@settings(max_examples=30, deadline=None)
@given(case=cases(), seed=st.integers(0, 2**31 - 1))
def test_gpu_matches_reference(case, seed):
    layout, dims, flags, dtype = case
    check(*make_inputs(layout, **dims, seed=seed, device="cuda", dtype=dtype, **flags))
