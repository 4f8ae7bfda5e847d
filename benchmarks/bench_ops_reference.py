"""The pure-PyTorch reference selective scan at a Mamba-1 layer's real size on CPU: b=1, d_inner=1536
(mamba1-790m / -1.4b: d_model 768 x expand 2), d_state=16, L=4096, fp32, called as the Mamba-1 mixer calls it.

    python -m pytest benchmarks/bench_ops_reference.py --benchmark-only

Not collected by `pytest benchmarks` (the name does not match test_*.py): it measures our reference kernel,
not a model case of the benchmark grid.
"""

import torch

from perfmamba import ops

SHAPE = dict(batch=1, d_inner=1536, d_state=16, seqlen=4096)


def scan_inputs(batch: int, d_inner: int, d_state: int, seqlen: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        u=torch.randn(batch, d_inner, seqlen, generator=g),
        delta=torch.randn(batch, d_inner, seqlen, generator=g) * 0.5 - 2.0,
        A=-torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1),  # S4D-real init
        B=torch.randn(batch, d_state, seqlen, generator=g),
        C=torch.randn(batch, d_state, seqlen, generator=g),
        D=torch.ones(d_inner),
        z=torch.randn(batch, d_inner, seqlen, generator=g),
        delta_bias=torch.randn(d_inner, generator=g) * 0.1,
        delta_softplus=True,
    )


def test_selective_scan_reference(benchmark):
    inputs = scan_inputs(**SHAPE)
    benchmark.extra_info.update(SHAPE, dtype="float32", threads=torch.get_num_threads())
    y = benchmark.pedantic(lambda: ops.selective_scan(**inputs, backend="reference"), rounds=5, warmup_rounds=1)
    assert y.shape == (SHAPE["batch"], SHAPE["d_inner"], SHAPE["seqlen"]) and torch.isfinite(y).all()
