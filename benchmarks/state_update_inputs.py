"""The decode step's inputs for benchmarks/state_update_kernels.py and state_update_floor.py: laid out as the
models pass them, as the model's own call lays them out (views into the projections' outputs); the shapes and the
N' they are timed at."""

from __future__ import annotations

import torch

# The Mamba-2 presets' decode-state shapes: (nheads, headdim), d_inner = their product.
MAMBA2_SHAPES = {"mamba2-130m": (24, 64), "mamba2-1.3b": (64, 64)}


def parse_dstates(value: str, flag: str) -> tuple[int, ...]:
    """A command line's '128,116' -> (128, 116): positive N', or SystemExit naming the flag."""
    try:
        out = tuple(int(v) for v in value.split(","))
    except ValueError:
        out = ()
    if not out or min(out) < 1:
        raise SystemExit(f"{flag} takes positive N' separated by commas, got {value!r}")
    return out


def decode_inputs(batch: int, nheads: int, headdim: int, dstate: int, device, dtype, mamba1: bool = False):
    """One decode step's arguments as the models pass them: A, D, dt_bias fp32, activations in `dtype`."""
    g = torch.Generator(device="cpu").manual_seed(dstate)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device)

    if mamba1:
        d = nheads * headdim
        args = (randn(batch, d, dstate).to(dtype), randn(batch, d).to(dtype),
                (randn(batch, d, scale=0.5) - 2).to(dtype), -torch.exp(randn(d, dstate)),
                randn(batch, dstate).to(dtype), randn(batch, dstate).to(dtype))
        return args, dict(D=randn(d), z=randn(batch, d).to(dtype), dt_bias=randn(d, scale=0.1), dt_softplus=True)
    h, p = nheads, headdim
    args = (randn(batch, h, p, dstate).to(dtype), randn(batch, h, p).to(dtype),
            (randn(batch, h, scale=0.5) - 2).to(dtype)[..., None].expand(-1, -1, p),
            # negated before the expand: `-t.expand(...)` would be a new contiguous A and no kernel would tie dt
            # and A per head (the run of 2026-12-01 timed that untied path; the "layout" section keeps it)
            (-torch.exp(randn(h)))[:, None, None].expand(-1, p, dstate),
            randn(batch, 1, dstate).to(dtype), randn(batch, 1, dstate).to(dtype))
    kwargs = dict(D=randn(h)[:, None].expand(-1, p), dt_bias=randn(h, scale=0.1)[:, None].expand(-1, p),
                  dt_softplus=True)
    return args, kwargs


def model_layout_inputs(batch: int, nheads: int, headdim: int, dstate: int, device, dtype, tied: bool = True):
    """`decode_inputs` laid out as Mamba2Mixer.step passes them: x, B, C views into the conv output (rows of
    d_inner + 2N), dt a view into the in_proj output (rows of 2 d_inner + 2N + nheads) expanded over headdim with
    stride 0, A / D / dt_bias per head expanded. `tied=False`: dt, dt_bias and A materialised per channel, so
    neither kernel can take its one-decay-per-head path."""
    (state, x, dt, A, B, C), kw = decode_inputs(batch, nheads, headdim, dstate, device, dtype)
    d = nheads * headdim
    xbc = torch.empty(batch, d + 2 * dstate, device=device, dtype=dtype)
    zxbcdt = torch.empty(batch, 2 * d + 2 * dstate + nheads, device=device, dtype=dtype)
    xbc[:, :d], xbc[:, d:d + dstate], xbc[:, d + dstate:] = x.reshape(batch, d), B[:, 0], C[:, 0]
    zxbcdt[:, -nheads:] = dt[..., 0]
    x = xbc[:, :d].view(batch, nheads, headdim)
    B, C = xbc[:, d:d + dstate].view(batch, 1, dstate), xbc[:, d + dstate:].view(batch, 1, dstate)
    dt = zxbcdt[:, -nheads:].unsqueeze(-1).expand(-1, -1, headdim)
    if not tied:
        dt, A, kw = dt.contiguous(), A.contiguous(), {**kw, "dt_bias": kw["dt_bias"].contiguous()}
    return (state, x, dt, A, B, C), kw


def strides(args, kwargs) -> dict:
    names = ("state", "x", "dt", "A", "B", "C")
    tensors = {**dict(zip(names, args)), **{k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}}
    return {k: list(t.stride()) for k, t in tensors.items()}


def state_bytes(args) -> int:
    state, x, *_ = args
    # the state is read and written; x, B, C and y are a few per cent of it and also counted
    return 2 * state.numel() * state.element_size() + 2 * x.numel() * x.element_size() + sum(
        t.numel() * t.element_size() for t in args[4:6])
