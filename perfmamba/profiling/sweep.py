"""`profile(model, config)`: where the time, memory, FLOPs and bytes of a Mamba model go, per component, across
sequence lengths and batch sizes, for prefill and decode. The driver: it plans the points (path x mode x batch x
sequence length), measures each (`measure`), derives what follows from them (`analysis`) and merges runs.

A point whose memory bound (`footprint`) is above what the device has free is skipped, unstarted, and ends its
series, as does a point that ran out of memory (recorded as such: longer sequences would not fit either); the
points measured before it are kept. `budget_s` ends the sweep cleanly when the next point would not fit in the
time left.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from perfmamba import ops
from perfmamba.models import MambaLM, ModelConfig, build_model, get_model
from perfmamba.models.components import MODES
from perfmamba.ops.registry import unavailable_reason
from perfmamba.profiling.analysis import fit_scaling, place_on_roofline
from perfmamba.profiling.config import DTYPES, ProfileConfig
from perfmamba.profiling.footprint import available_memory, gib, point_footprint
from perfmamba.profiling.measure import free_memory, is_out_of_memory, measure_point
from perfmamba.profiling.memory import tensor_bytes
from perfmamba.profiling.result import ModelInfo, PointResult, ProfileResult
from perfmamba.profiling.roofline import DevicePeaks, measure_peaks
from perfmamba.timing import flushing_subnormals

_OPS_USED = {
    1: ("rms_norm", "causal_conv1d", "selective_scan", "causal_conv1d_update", "selective_state_update"),
    2: ("rms_norm", "causal_conv1d", "ssd_scan", "rms_norm_gated", "causal_conv1d_update", "selective_state_update"),
}
_FUSED_OP = {1: "mamba_inner", 2: "mamba_split_conv1d_scan"}


def _resolved_backends(model: MambaLM, backend: str, device: torch.device) -> dict[str, str]:
    probe = torch.empty(0, device=device)
    out = {}
    for op in _OPS_USED[model.config.version]:
        try:
            out[op] = ops.resolve(op, backend, probe)[0]
        except (ValueError, ops.BackendUnavailableError) as e:
            out[op] = f"unavailable: {e}"
    return out


def _load(model_or_spec: MambaLM | ModelConfig | str | Path, cfg: ProfileConfig) -> tuple[MambaLM, str]:
    dtype = DTYPES[cfg.dtype]
    if isinstance(model_or_spec, MambaLM):
        p = next(model_or_spec.parameters())
        if p.device.type != torch.device(cfg.device).type or p.dtype != dtype:
            raise ValueError(
                f"the model is on {p.device} in {p.dtype}, the config asks for {cfg.device} in {cfg.dtype}; "
                "pass a matching device/dtype (or a preset name / checkpoint path to build it there)"
            )
        return model_or_spec, getattr(model_or_spec, "name_or_path", None) or "model"
    if isinstance(model_or_spec, ModelConfig):
        return build_model(model_or_spec, device=cfg.device, dtype=dtype, seed=cfg.seed), "custom"
    return get_model(model_or_spec, device=cfg.device, dtype=dtype), str(model_or_spec)


def _model_info(model: MambaLM, name: str, cfg: ProfileConfig) -> ModelInfo:
    params = list(model.parameters())
    return ModelInfo(
        name=name, version=model.config.version,
        config={k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(model.config).items()},
        params=sum(p.numel() for p in {id(p): p for p in params}.values()),
        weights_bytes=tensor_bytes([*params, *model.buffers()]), device=cfg.device, dtype=cfg.dtype,
        backends=_resolved_backends(model, cfg.backend, torch.device(cfg.device)),
    )


def _fused_available(version: int) -> str | None:
    reason = unavailable_reason(_FUSED_OP[version], "cuda")
    return None if reason is None else f"unavailable: {reason}"


def plan_points(cfg: ProfileConfig) -> list[PointResult]:
    """The points of a resolved config's sweep, in the order they run (pending)."""
    # The fused path has no decode step (decode is the unfused path's): no such points are planned.
    return [
        PointResult(path=path, mode=mode, batch=batch, seqlen=seqlen)
        for path in cfg.paths for mode in cfg.modes for batch in cfg.batch_sizes for seqlen in cfg.seqlens
        if not (path == "fused" and mode == "decode")
    ]


def profile(
    model_or_spec: MambaLM | ModelConfig | str | Path, config: ProfileConfig | None = None, *,
    peaks: DevicePeaks | None = None, name: str | None = None, resume: ProfileResult | None = None,
    on_point: Callable[[ProfileResult], None] | None = None, **overrides: Any,
) -> ProfileResult:
    """Profile a model (a `MambaLM`, a `ModelConfig`, a preset name or a checkpoint directory; random weights
    for presets) over the sweep of `config` (keyword `overrides` replace its fields).

    Returns every point, finished or not: an out-of-memory point has status "oom" and ends its series, points
    past `budget_s` are "skipped", a point that raised anything else is "error" (with the message).
    `peaks`: the device's peaks, if already measured. `resume`: an earlier (interrupted) result of the same
    model; its finished and out-of-memory points are taken over instead of measured again. `on_point`: called
    with the result so far after every point (to save progress)."""
    cfg = dataclasses.replace(config or ProfileConfig(), **overrides).resolved()
    device = torch.device(cfg.device)
    previous_threads = torch.get_num_threads()
    if cfg.cpu_threads is not None and device.type == "cpu":
        torch.set_num_threads(cfg.cpu_threads)
    start = time.monotonic()
    try:
        # As the benchmark suite: flush subnormals, which the reference scans' decaying states produce and which
        # x86 cores handle ~100x slower (the CUDA kernels flush them too).
        with torch.inference_mode(), flushing_subnormals():
            model, default_name = _load(model_or_spec, cfg)
            with model.configured(backend=cfg.backend):
                model.eval()
                result = _sweep(model, cfg, device, peaks, name or default_name, start, resume, on_point)
    finally:
        torch.set_num_threads(previous_threads)
    result.wall_s = time.monotonic() - start
    return result


def _sweep(model: MambaLM, cfg: ProfileConfig, device: torch.device, peaks: DevicePeaks | None, name: str,
           start: float, resume: ProfileResult | None, on_point: Callable[[ProfileResult], None] | None,
           ) -> ProfileResult:
    notes: list[str] = []
    if peaks is None and cfg.roofline:
        peaks = measure_peaks(device, DTYPES[cfg.dtype] if device.type == "cuda" else torch.float32)
    info = _model_info(model, name, cfg)
    if device.type == "cuda" and any(v == "reference" for v in info.backends.values()):
        notes.append("some ops ran their pure-PyTorch reference on the GPU (mamba-ssm / causal-conv1d missing): "
                     f"{info.backends}")
    points = plan_points(cfg)
    fused_missing = _fused_available(model.config.version) if "fused" in cfg.paths else None
    stopped: dict[tuple[str, str, int], str] = {}  # series -> why it ended
    last_wall: dict[tuple[str, str, int], tuple[int, float]] = {}
    counted: set[tuple[str, str, int]] = set()
    done = _resumable(resume, model.config, cfg)

    def partial() -> ProfileResult:
        return ProfileResult(model=info, config=cfg, points=points, fits=fit_scaling(points), peaks=peaks,
                             notes=notes)

    progress = _progress(len(points), cfg.progress)
    for i, point in enumerate(points):
        series = (point.path, point.mode, point.batch)
        progress.set_description(f"{name} {point.path} {point.mode} b={point.batch} L={point.seqlen}")
        if point.key in done:
            points[i] = point = done[point.key]
            if point.status == "oom":
                stopped[series] = f"series ended by out of memory at L={point.seqlen}"
            if any(c.counted_flops is not None for c in point.components):
                counted.add(series)
            progress.update(1)
            continue
        reason = _skip_reason(point, cfg, device, fused_missing, stopped.get(series), last_wall.get(series), start)
        if reason is None and (reason := _memory_reason(model.config, point, cfg, device)) is not None:
            stopped[series] = f"series ended: L={point.seqlen} would not fit in memory"
        if reason is not None:
            point.status, point.message = "skipped", reason
            progress.update(1)
            continue
        t0 = time.monotonic()
        try:
            measure_point(model, cfg, point, peaks=peaks, count_flops=series not in counted and cfg.count_flops)
            point.status = "ok"
            counted.add(series)
        except Exception as e:  # noqa: BLE001 - one point's failure is recorded, the sweep goes on
            _reset_point(point)
            if is_out_of_memory(e):
                point.status = "oom"
                point.message = f"out of memory: {str(e).splitlines()[0][:300]}"
                stopped[series] = f"series ended by out of memory at L={point.seqlen}"
            else:
                point.status = "error"
                point.message = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            free_memory(device)  # what the failed point held is garbage now; give it back before the next point
        point.wall_s = time.monotonic() - t0
        last_wall[series] = (point.seqlen, point.wall_s)
        progress.update(1)
        if on_point is not None:
            on_point(partial())
    progress.close()
    return partial()


def _resumable(resume: ProfileResult | None, config: ModelConfig, cfg: ProfileConfig) -> dict[tuple, PointResult]:
    if resume is None:
        return {}
    if ModelConfig(**resume.model.config) != config:
        raise ValueError(f"cannot resume from a profile of another model ({resume.model.name!r}: "
                         f"{resume.model.config})")
    if (resume.model.device, resume.model.dtype) != (cfg.device, cfg.dtype):
        raise ValueError(f"cannot resume a profile taken on {resume.model.device} in {resume.model.dtype} on "
                         f"{cfg.device} in {cfg.dtype}")
    return {p.key: p for p in resume.points if p.status in ("ok", "oom")}


def _reset_point(point: PointResult) -> None:
    fresh = PointResult(path=point.path, mode=point.mode, batch=point.batch, seqlen=point.seqlen)
    for f in dataclasses.fields(PointResult):
        setattr(point, f.name, getattr(fresh, f.name))


def _skip_reason(point: PointResult, cfg: ProfileConfig, device: torch.device, fused_missing: str | None,
                 stopped: str | None, last: tuple[int, float] | None, start: float) -> str | None:
    if stopped is not None:
        return stopped
    if point.path == "fused":
        if device.type != "cuda":
            return "the fused path needs CUDA tensors"
        if fused_missing:
            return f"the fused kernel is {fused_missing}"
    if cfg.budget_s is not None:
        elapsed = time.monotonic() - start
        # The next point of a series takes about the last one's time scaled by the length ratio (at least).
        estimate = last[1] * max(1.0, point.seqlen / last[0]) if last else 0.0
        if elapsed + estimate > cfg.budget_s:
            return f"time budget of {cfg.budget_s:.0f} s reached ({elapsed:.0f} s spent, next point ~{estimate:.0f} s)"
    return None


def _memory_reason(config: ModelConfig, point: PointResult, cfg: ProfileConfig, device: torch.device) -> str | None:
    """Why `point` must not start: its memory bound is above what the device has free now (a CPU would be driven
    into the OOM killer, which ends the whole process, not just the point)."""
    free = available_memory(device)
    if free is None:
        return None
    need = point_footprint(config, mode=point.mode, seqlen=point.seqlen, batch=point.batch, dtype=cfg.dtype).total
    if need <= free:
        return None
    return f"needs up to {gib(need)} (the memory bound), {gib(free)} free on {device.type}"


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, leave=False, unit="point")


def reanalyse(result: ProfileResult) -> ProfileResult:
    """`result` with what is derived from its measurements (each component's place under the roofline, the
    scaling fits) recomputed by this version's rules: for profiles measured by an older perfmamba."""
    if result.peaks is not None:
        for p in result.ok_points():
            place_on_roofline(p, result.peaks)
    return dataclasses.replace(result, fits=fit_scaling(result.points))


def merge_results(results: Sequence[ProfileResult]) -> ProfileResult:
    """One result from several runs of the same model and settings (e.g. a sweep resumed point by point): the
    last result's model, config and peaks, the points of all (a later finished point replaces an earlier one
    with the same key), the seqlens and batch sizes of all, and fits over the union."""
    if not results:
        raise ValueError("merge_results needs at least one result")
    by_key: dict[tuple, PointResult] = {}
    for res in results:
        if res.model.name != results[0].model.name or res.model.config != results[0].model.config:
            raise ValueError(f"cannot merge profiles of different models: {results[0].model.name!r} and "
                             f"{res.model.name!r}")
        for p in res.points:
            if p.key not in by_key or p.status == "ok" or by_key[p.key].status != "ok":
                by_key[p.key] = p
    points = sorted(by_key.values(), key=lambda p: (p.path, MODES.index(p.mode), p.batch, p.seqlen))
    last = results[-1]
    config = dataclasses.replace(
        last.config,
        seqlens=tuple(sorted({p.seqlen for p in points})), batch_sizes=tuple(sorted({p.batch for p in points})),
    )
    notes = list(dict.fromkeys(n for r in results for n in r.notes))
    return ProfileResult(model=last.model, config=config, points=points, fits=fit_scaling(points),
                         peaks=last.peaks, notes=notes, wall_s=sum(r.wall_s for r in results))
