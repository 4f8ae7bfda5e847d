"""GPU tests carry `@pytest.mark.gpu` (needs a CUDA device) and `@pytest.mark.mamba_ssm` (needs its kernels);
both skip with the reason on machines that lack them.

This directory is on sys.path (pytest's rootdir conftest), so tests import shared helpers as
`from strategies import ...`.
"""

import pytest
import torch

# The ops whose CUDA backend is mamba-ssm itself (causal-conv1d is a separate package, checked by its tests).
MAMBA_SSM_OPS = ("selective_scan", "selective_state_update", "ssd_scan", "rms_norm", "rms_norm_gated")


def _mamba_ssm_missing() -> str | None:
    from perfmamba.ops import backend_status

    status = backend_status()
    for op in MAMBA_SSM_OPS:
        if status[op]["cuda"] != "available":
            return f"{op}: {status[op]['cuda']}"
    return None


def pytest_collection_modifyitems(config, items):
    no_gpu = None if torch.cuda.is_available() else "needs a CUDA device; torch.cuda.is_available() is False"
    no_kernels = _mamba_ssm_missing() if any("mamba_ssm" in item.keywords for item in items) else None
    for item in items:
        if "gpu" in item.keywords and no_gpu:
            item.add_marker(pytest.mark.skip(reason=no_gpu))
        elif "mamba_ssm" in item.keywords and no_kernels:
            item.add_marker(pytest.mark.skip(reason=f"needs mamba-ssm's CUDA kernels: {no_kernels}"))
