"""The device's measured peaks and each component's place under its roofline.

Peaks are measured, not taken from a datasheet: the best of a few rounds of a large device-to-device copy
(bandwidth, bytes read + written; on a GPU the faster of a memcpy and a copy kernel) and of a large matrix product
in the profile's dtype (FLOP/s); bf16 on a GPU, fp32 on a CPU. On a CPU the product is tried at a few sizes and the
best kept: cache-resident sizes run at the cores' peak while large ones fall to a fraction of it on a small VM. A
CPU component whose working set stays in cache can still beat the DRAM roofline (fraction above 100%). Peaks are
measured once per process and device (`measure_peaks` caches), so a sweep's points share one roofline. A component
at `fraction` 1.0 runs at the roofline: as fast as its FLOPs or its minimum bytes allow on this device; 0.1 means ten
times slower than that.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from perfmamba.profiling.costs import Cost
from perfmamba.timing import time_fn


@dataclass(frozen=True)
class DevicePeaks:
    device: str  # "cuda" / "cpu"
    name: str  # GPU or CPU model
    dtype: str  # the matmul's dtype
    matmul_flops_per_s: float
    copy_bytes_per_s: float  # bytes read + written per second
    matmul_size: int  # n of the n x n x n product
    copy_bytes: int  # bytes of the copied buffer

    @property
    def ridge_intensity(self) -> float:
        """FLOPs per byte above which the roofline is compute-bound."""
        return self.matmul_flops_per_s / self.copy_bytes_per_s


@dataclass(frozen=True)
class RooflinePoint:
    intensity: float  # FLOPs per minimum byte
    achieved_flops_per_s: float
    achieved_bytes_per_s: float
    attainable_flops_per_s: float  # min(peak FLOP/s, intensity * peak bandwidth)
    fraction: float  # achieved / attainable: 1.0 is on the roofline
    bound: str  # "compute" or "memory" (by the roofline, not by the measurement)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine()


def default_sizes(device: torch.device) -> tuple[tuple[int, ...], int]:
    """(matmul sizes n to try, copy bytes): large enough to reach the peaks, quick enough (well under a
    second)."""
    if device.type == "cuda":
        return (8192,), 1 << 30
    return (256, 512, 1024), 64 << 20


def _matmul_seconds(device: torch.device, dtype: torch.dtype, n: int, rounds: int) -> float:
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    c = torch.empty(n, n, device=device, dtype=dtype)
    return time_fn(lambda: torch.mm(a, b, out=c), device, rounds=rounds, warmup=2, flush_l2=False).min


def _copy_seconds(device: torch.device, nbytes: int, rounds: int) -> float:
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    if device.type != "cuda":
        return time_fn(lambda: dst.copy_(src), device, rounds=rounds, warmup=2, flush_l2=False).min
    # A CUDA graph captures a device-to-device copy_ as a memcpy node: on an H200 that measured 2.6 TB/s, against
    # 4.2 TB/s launched eagerly, which put kernels "above the roof". So the faster of an eager memcpy (a 1 GiB
    # copy hides its launch) and an elementwise copy kernel (what the model's kernels are) in a graph.
    halves = src.view(torch.bfloat16), dst.view(torch.bfloat16)
    eager = time_fn(lambda: dst.copy_(src), device, rounds=rounds, warmup=2, flush_l2=False, graph=False).min
    kernel = time_fn(lambda: torch.mul(halves[0], 1, out=halves[1]), device, rounds=rounds, warmup=2,
                     flush_l2=False).min
    return min(eager, kernel)


@functools.cache
def _measure(device_str: str, dtype: torch.dtype, sizes: tuple[int, ...], copy_bytes: int, rounds: int) -> DevicePeaks:
    device = torch.device(device_str)
    # The best round (`.min`) of the best size: a peak is what the device can do; the rest is interference.
    rate, n = max((2.0 * n**3 / _matmul_seconds(device, dtype, n, rounds), n) for n in sizes)
    copy = _copy_seconds(device, copy_bytes, rounds)
    return DevicePeaks(
        device=device.type, name=_device_name(device), dtype=str(dtype).removeprefix("torch."),
        matmul_flops_per_s=rate, copy_bytes_per_s=2.0 * copy_bytes / copy, matmul_size=n, copy_bytes=copy_bytes,
    )


def measure_peaks(
    device: torch.device | str, dtype: torch.dtype | None = None, *, matmul_size: int | None = None,
    copy_bytes: int | None = None, rounds: int = 5,
) -> DevicePeaks:
    """Measured peak FLOP/s (n x n x n matmul in `dtype`; default bf16 on CUDA, fp32 on a CPU; `matmul_size`
    fixes n) and copy bandwidth of `device`; cached per process and arguments."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sizes, nbytes = default_sizes(device)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    return _measure(str(device), dtype, (matmul_size,) if matmul_size else sizes, copy_bytes or nbytes, rounds)


def roofline_point(cost: Cost, seconds: float, peaks: DevicePeaks) -> RooflinePoint:
    """Where work of `cost` that took `seconds` sits under the roofline of `peaks`."""
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    intensity = cost.intensity
    attainable = min(peaks.matmul_flops_per_s, intensity * peaks.copy_bytes_per_s)
    achieved = cost.flops / seconds
    bound = "compute" if intensity >= peaks.ridge_intensity else "memory"
    if attainable > 0:
        fraction = achieved / attainable
    else:  # moves bytes but does no arithmetic (the embedding): judge it by bandwidth alone
        fraction = cost.bytes / seconds / peaks.copy_bytes_per_s
    return RooflinePoint(
        intensity=intensity, achieved_flops_per_s=achieved, achieved_bytes_per_s=cost.bytes / seconds,
        attainable_flops_per_s=attainable, fraction=fraction, bound=bound,
    )
