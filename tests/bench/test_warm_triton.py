"""benchmarks/warm_triton.py: its worker runs every path, length and (with --train) the backward pass; its
parent refuses to run without a GPU."""

import bench_scripts
import pytest
import torch

warm_triton = bench_scripts.load_script("warm_triton")


def test_worker_runs_prefill_cache_and_decode_on_both_paths_and_training():
    # on a CPU "auto" is the unfused path on the reference ops: the same calls, nothing to compile
    warm_triton.warm_one("mamba2-tiny", 16, paths=("unfused",), train=True, device="cpu", dtype="fp32")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_needs_a_gpu(capsys):
    assert warm_triton.main(["--presets", "mamba2-tiny", "--d-states", "16"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
