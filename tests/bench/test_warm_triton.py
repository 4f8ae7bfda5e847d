"""benchmarks/warm_triton.py: its worker runs every path, length and (with --train) the backward pass; its
parent refuses to run without a GPU, and reads every worker's output without blocking on it."""

import sys

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


def test_grid_jobs_are_the_grids_mamba2_shapes():
    jobs = warm_triton.grid_jobs("gpu")
    # mamba2-130m at ratios 0 / 0.5 / 0.9 in bf16, the trained mamba2-tiny of the perplexity cases in fp32
    assert {(j.presets, j.d_state, j.dtype) for j in jobs} == {
        (("mamba2-130m",), 128, "bf16"), (("mamba2-130m",), 64, "bf16"), (("mamba2-130m",), 12, "bf16"),
        (("mamba2-tiny",), 32, "fp32"), (("mamba2-tiny",), 16, "fp32"), (("mamba2-tiny",), 4, "fp32"),
    }


def test_bad_arguments_are_named(capsys):
    with pytest.raises(SystemExit):
        warm_triton.main(["--grid", "nope"])
    assert "unknown grid 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        warm_triton.main([])
    assert "nothing to compile" in capsys.readouterr().err


def test_workers_that_print_a_lot_neither_block_nor_hide_failures(monkeypatch, capsys):
    # 200 kB is more than a pipe holds: a worker writing it into an unread pipe would never exit
    script = "import sys; sys.stdout.write('x' * 200_000 + 'END'); sys.exit({})"
    monkeypatch.setattr(warm_triton, "_worker_command",
                        lambda job, paths, train: [sys.executable, "-c", script.format(job.d_state)])
    jobs = [warm_triton.Job(("a",), 0), warm_triton.Job(("b",), 3)]
    assert warm_triton.warm(jobs, [], train=False, parallel=2) == 1
    out = capsys.readouterr().out
    assert "a N'=0 bf16: ok" in out and "b N'=3 bf16: FAILED (exit 3)" in out and "END" in out
