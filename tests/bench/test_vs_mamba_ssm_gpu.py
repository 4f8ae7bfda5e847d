"""The vs_mamba_ssm level's reference on a GPU: mamba-ssm's model built from our checkpoint gives our logits,
its decode step our step's, its generate our generate's tokens, and a case times both sides as CUDA graphs."""

import pytest
import torch
from gpu_checks import ATOL, RTOL, SMALL_CONFIGS

from perfmamba.bench import reference_model
from perfmamba.bench.cases import REFERENCE_LEVEL, Case
from perfmamba.bench.suite import run_case
from perfmamba.bench.workloads import ModelCache
from perfmamba.models import build_model

pytestmark = [pytest.mark.gpu, pytest.mark.mamba_ssm]

CONFIGS = SMALL_CONFIGS


@pytest.mark.parametrize("version", [1, 2])
def test_reference_gives_our_logits_steps_and_tokens(version):
    ours = build_model(CONFIGS[version], device="cuda", seed=0)
    theirs = reference_model.mamba_ssm_model(ours)
    prompt = torch.randint(0, 1000, (3, 40), device="cuda")
    token = torch.randint(0, 1000, (3,), device="cuda")
    assert reference_model.logits_rel_error(ours, theirs, prompt) < 1e-3
    step, params = reference_model.decode_step_fn(theirs, prompt, token)
    with torch.inference_mode():
        cache = ours.allocate_cache(3)
        ours(prompt, cache=cache)
        torch.testing.assert_close(step()[:, -1], ours.step(token, cache), rtol=RTOL, atol=ATOL)
    assert reference_model.cache_bytes(params) == sum(layer.nbytes for layer in cache)
    want = reference_model.mamba_ssm_generate(theirs, prompt, 8, cg=True)
    # Token for token on mamba-ssm's kernels. By default our decode step may run our own Triton kernel (the
    # measured choice), whose bf16 rounding can flip a greedy pick of this random model after a few tokens.
    with ours.configured(backend="cuda"):
        assert torch.equal(ours.generate(prompt, 8, cg=True), want)
    assert torch.equal(ours.generate(prompt, 8, cg=True)[:, 0], want[:, 0])  # the prefill's pick


@pytest.mark.parametrize("mode, seqlen, batch", [("prefill", 256, 8), ("decode", 64, 16)])
def test_a_case_times_both_models_as_graphs(mode, seqlen, batch):
    case = Case("mamba2-tiny", REFERENCE_LEVEL, mode, seqlen, batch, dtype="bf16")
    result = run_case(case, torch.device("cuda"), models=ModelCache(), rounds=3, warmup=1)
    extra = result.extra_info
    assert extra["clock"] == "cuda_graph" and extra["time_over_mamba_ssm"] > 0
    assert extra["mamba_ssm_median_s"] > 0 and extra["mamba_ssm_logits_rel_error"] < 0.05
