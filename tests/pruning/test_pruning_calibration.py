"""Calibration statistics against a float64 brute force over every time step, and the data plumbing."""

import pytest
import torch
import torch.nn.functional as F
from prune_strategies import TINY, VOCAB, model_and_tokens, tokens

from perfmamba import ops
from perfmamba.models import build_model
from perfmamba.pruning import NoSSMLayersError, calibrate
from perfmamba.pruning.calibration import iter_batches


def brute_force(mixer, hidden):
    """Every state h[b, t, u, p, n] of one layer in float64, the scan's y (before z) rebuilt from them, and the
    per-token dt, A (per unit), B, C per unit, straight from mixer.scan_inputs."""
    inp = mixer.scan_inputs(hidden)
    if mixer.version == 1:
        dt = F.softplus(inp.delta.double() + inp.delta_bias.double()[:, None]).transpose(1, 2)  # (b, L, d)
        x = inp.u.double().transpose(1, 2)[..., None]  # (b, L, d, 1)
        A = inp.A.double()  # (d, N)
        B = inp.B.double().transpose(1, 2)[:, :, None].expand(-1, -1, A.shape[0], -1)  # (b, L, d, N)
        C = inp.C.double().transpose(1, 2)[:, :, None].expand(-1, -1, A.shape[0], -1)
        y_op = ops.selective_scan_ref(inp.u, inp.delta, inp.A, inp.B, inp.C, inp.D, delta_bias=inp.delta_bias,
                                      delta_softplus=True).transpose(1, 2)[..., None]
        D = inp.D.double()[:, None]
    else:
        dt = F.softplus(inp.dt.double() + inp.dt_bias.double())  # (b, L, h)
        x = inp.x.double()
        h_, g = x.shape[2], inp.B.shape[2]
        A = inp.A.double()[:, None].expand(-1, inp.B.shape[-1])
        B = inp.B.double().repeat_interleave(h_ // g, dim=2)
        C = inp.C.double().repeat_interleave(h_ // g, dim=2)
        y_op = ops.ssd_scan_ref(inp.x, inp.dt, inp.A, inp.B, inp.C, mixer.chunk_size, D=inp.D,
                                dt_bias=inp.dt_bias, dt_softplus=True)
        D = inp.D.double()[:, None]
    b, L, U, P = x.shape
    N = A.shape[1]
    h = torch.zeros(b, U, P, N, dtype=torch.float64)
    hs, ys = [], []
    for t in range(L):
        decay = torch.exp(dt[:, t, :, None, None] * A[:, None])
        h = decay * h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None]
        hs.append(h)
        ys.append((h * C[:, t, :, None]).sum(-1) + D * x[:, t])
    return torch.stack(hs, 1), torch.stack(ys, 1), y_op, dt, A, B, C


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("chunk_elements", [1, 100, 1 << 24])
def test_statistics_equal_brute_force(version, chunk_elements):
    model, ids = model_and_tokens(TINY[version], seed=3)
    hidden = {}
    mixer = model.mixers[1]
    handle = mixer.register_forward_pre_hook(lambda m, a: hidden.setdefault("h", a[0]))
    stats = calibrate(model, ids, chunk_elements=chunk_elements, progress=False)
    handle.remove()
    with torch.no_grad():
        hs, ys, y_op, dt, A, B, C = brute_force(mixer, hidden["h"])
    # The brute force is the model's own scan: rebuilding y from its states gives the op's output.
    torch.testing.assert_close(ys.float(), y_op.float().reshape(ys.shape), rtol=1e-4, atol=1e-5)
    s = stats.layers[1]
    b, L, U, P, N = hs.shape
    assert s.tokens == b * L == stats.tokens
    close = dict(rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(s.h2, hs.square().sum((0, 1, 3)), **close)
    torch.testing.assert_close(s.ch2, (hs * C[:, :, :, None]).square().sum((0, 1, 3)), **close)
    torch.testing.assert_close(s.decay2, torch.exp(2 * dt[..., None] * A).sum((0, 1)), **close)
    torch.testing.assert_close(s.delta, dt.sum((0, 1)), **close)
    torch.testing.assert_close(s.delta_absB, (dt[..., None] * B.abs()).sum((0, 1)), **close)
    G = s.ngroups
    per_group = U // G
    torch.testing.assert_close(s.C2, C[:, :, ::per_group].square().sum((0, 1)), **close)
    torch.testing.assert_close(s.B2, B[:, :, ::per_group].square().sum((0, 1)), **close)
    torch.testing.assert_close(s.mean("h2"), hs.square().mean((0, 1, 3)), **close)


@pytest.mark.parametrize("version", [1, 2])
def test_statistics_stream_over_batches(version):
    """Sums over batches: one calibration over all rows equals the sum of calibrations over halves."""
    model, _ = model_and_tokens(TINY[version], seed=5)
    ids = tokens(7, batch=4)
    whole = calibrate(model, ids, batch_size=4, progress=False)
    as_batches = calibrate(model, iter([ids[:1], ids[1:3], ids[3]]), progress=False)
    first = calibrate(model, ids[:2], progress=False)
    second = calibrate(model, ids[2:], progress=False)
    assert as_batches.batches == 3 and whole.batches == 1 and whole.tokens == as_batches.tokens == ids.numel()
    for name in ("h2", "ch2", "decay2", "delta", "delta_absB", "B2", "C2"):
        for lw, lb, l1, l2 in zip(whole.layers, as_batches.layers, first.layers, second.layers):
            torch.testing.assert_close(getattr(lb, name), getattr(lw, name), rtol=1e-5, atol=1e-9)
            torch.testing.assert_close(getattr(l1, name) + getattr(l2, name), getattr(lw, name), rtol=1e-5, atol=1e-9)


def test_iter_batches_cuts_streams_and_rows():
    stream = torch.arange(100) % VOCAB
    batches = list(iter_batches(stream, batch_size=2, seq_len=16))
    assert [tuple(b.shape) for b in batches] == [(2, 16), (2, 16), (2, 16)]  # 6 rows of 16; 4 tokens dropped
    assert torch.equal(torch.cat(batches).reshape(-1), stream[:96])
    assert [tuple(b.shape) for b in iter_batches(torch.zeros(5, 7, dtype=torch.long), batch_size=2)] == [
        (2, 7), (2, 7), (1, 7)]
    assert [tuple(b.shape) for b in iter_batches(torch.arange(10), seq_len=16)] == [(1, 10)]  # shorter than a row
    assert len(list(iter_batches(torch.zeros(9, 4, dtype=torch.long), batch_size=1, max_batches=3))) == 3


def test_calibration_input_errors():
    model = build_model(TINY[1])
    with pytest.raises(TypeError, match="integer ids"):
        calibrate(model, torch.rand(2, 8), progress=False)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 40\)"):
        calibrate(model, torch.full((1, 4), 99), progress=False)
    with pytest.raises(ValueError, match="no tokens"):
        calibrate(model, [], progress=False)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        calibrate(model, torch.zeros(1, 2, 3, dtype=torch.long), progress=False)
    with pytest.raises(NoSSMLayersError, match="Linear has no SSM layers"):
        calibrate(torch.nn.Linear(2, 2), torch.zeros(1, 2, dtype=torch.long))


def test_data_free_calibration_has_static_statistics_only():
    model = build_model(TINY[1], seed=0)
    stats = calibrate(model, None)
    assert stats.tokens == 0 and stats.batches == 0
    layer = stats.layers[0]
    torch.testing.assert_close(layer.A_abs, model.mixers[0].A.double().abs())
    w = model.mixers[0].x_proj.weight.double()
    r, N = model.mixers[0].dt_rank, model.mixers[0].d_state
    torch.testing.assert_close(layer.B_weight[0], w[r : r + N].norm(dim=1))
    torch.testing.assert_close(layer.C_weight[0], w[r + N :].norm(dim=1))
    with pytest.raises(ValueError, match="no calibration tokens"):
        layer.mean("h2")
