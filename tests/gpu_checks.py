"""The GPU tests' one check that our model gives mamba-ssm's logits, on both mixer paths."""

import torch

from perfmamba.models import ModelConfig

# Small models of both versions that mamba-ssm's kernels run at every pruned N' the GPU tests try
SMALL_CONFIGS = {
    1: ModelConfig(version=1, d_model=256, n_layer=3, vocab_size=1000, d_state=16),
    2: ModelConfig(version=2, d_model=256, n_layer=3, vocab_size=1000, pad_vocab_size_multiple=16,
                   d_state=64, headdim=64, chunk_size=64),
}

# fp32 on the GPU: mamba-ssm's kernels and ours sum in other orders
RTOL, ATOL = 6e-4, 2e-3


def assert_matches_on_both_paths(ours, theirs, ids: torch.Tensor, msg: str = "") -> None:
    """`ours` (a MambaLM) on the fused and the unfused path gives the logits of `theirs` (mamba-ssm's
    MambaLMHeadModel) for the token ids `ids`."""
    with torch.no_grad():
        want = theirs(ids).logits
        for path in ("fused", "unfused"):
            got = ours.configure(path=path)(ids)
            torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL, msg=f"path={path}{msg}")
