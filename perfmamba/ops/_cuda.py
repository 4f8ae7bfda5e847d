"""Lazy, guarded access to the CUDA kernels of mamba-ssm and causal-conv1d.

Imported only when a CUDA backend is asked about: mamba-ssm 2.3.2.post1 raises (not just ImportError) on import
when its compiled extension is missing, and importing it pulls in Triton, which takes seconds.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

import torch

# op name -> (module, attribute) of the kernel entry point
KERNELS: dict[str, tuple[str, str]] = {
    "selective_scan": ("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"),
    "mamba_inner": ("mamba_ssm.ops.selective_scan_interface", "mamba_inner_fn"),
    "selective_state_update": ("mamba_ssm.ops.triton.selective_state_update", "selective_state_update"),
    "ssd_scan": ("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined"),
    "mamba_split_conv1d_scan": ("mamba_ssm.ops.triton.ssd_combined", "mamba_split_conv1d_scan_combined"),
    "rms_norm": ("mamba_ssm.ops.triton.layer_norm", "rms_norm_fn"),
    "rms_norm_gated": ("mamba_ssm.ops.triton.layernorm_gated", "rmsnorm_fn"),
    "causal_conv1d": ("causal_conv1d", "causal_conv1d_fn"),
    "causal_conv1d_update": ("causal_conv1d", "causal_conv1d_update"),
}


@functools.cache
def _load(op: str) -> tuple[Callable | None, str | None]:
    if not torch.cuda.is_available():
        return None, "no CUDA device (torch.cuda.is_available() is False)"
    module, attr = KERNELS[op]
    try:
        return getattr(importlib.import_module(module), attr), None
    except Exception as e:  # noqa: BLE001 - mamba-ssm raises arbitrary errors when its extension is missing
        package = module.split(".")[0].replace("_", "-")
        return None, f"{package} kernel {module}.{attr} not importable ({type(e).__name__}: {e})"


def unavailable(op: str) -> Callable[[], str | None]:
    """An availability check for the registry: None when the kernel for `op` can run here."""
    return lambda: _load(op)[1]


def kernel(op: str) -> Callable:
    fn, reason = _load(op)
    if fn is None:
        raise RuntimeError(reason)
    return fn
