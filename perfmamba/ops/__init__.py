"""Ops with mamba-ssm's signatures: each a pure-PyTorch reference, a CUDA kernel path and user plug-ins.

`backend="auto"` (the default) runs an active plug-in, else the CUDA kernel for CUDA tensors when installed,
else the reference. See `registry` for plugging in a kernel by dotted path or $PERFMAMBA_OPS (read on the
registry's first use, not at import).
"""

from perfmamba.ops.conv1d import causal_conv1d, causal_conv1d_ref, causal_conv1d_update, causal_conv1d_update_ref
from perfmamba.ops.fused import mamba_inner, mamba_inner_ref, mamba_split_conv1d_scan, mamba_split_conv1d_scan_ref
from perfmamba.ops.norm import (
    add_rms_norm,
    add_rms_norm_ref,
    rms_norm,
    rms_norm_gated,
    rms_norm_gated_ref,
    rms_norm_ref,
)
from perfmamba.ops.registry import (
    BackendUnavailableError,
    backend_status,
    plug_in,
    register,
    resolve,
    unplug,
    use,
)
from perfmamba.ops.selective_scan import (
    selective_scan,
    selective_scan_ref,
    selective_state_update,
    selective_state_update_ref,
)
from perfmamba.ops.ssd import ssd_scan, ssd_scan_ref

# isort: split
# Backends beside mamba-ssm's, selectable by name, registered after the ops they serve: "triton" (a decode step
# whose cost follows N'), "fastest" (the faster of cuda and triton per call shape, measured on first use),
# "cuda_padded" (SSD with N' zero-padded to a multiple of 16).
from perfmamba.ops import autoselect, ssd_padded, state_update_triton  # noqa: F401

__all__ = [
    "BackendUnavailableError", "add_rms_norm", "add_rms_norm_ref", "backend_status", "causal_conv1d",
    "causal_conv1d_ref", "causal_conv1d_update", "causal_conv1d_update_ref", "mamba_inner", "mamba_inner_ref",
    "mamba_split_conv1d_scan",
    "mamba_split_conv1d_scan_ref", "plug_in",
    "register", "resolve", "rms_norm", "rms_norm_gated", "rms_norm_gated_ref", "rms_norm_ref", "selective_scan",
    "selective_scan_ref", "selective_state_update", "selective_state_update_ref", "ssd_scan", "ssd_scan_ref",
    "unplug", "use",
]
