"""A profile's result: the schema (`ProfileResult` down to `ComponentStats`) and its files.

The JSON file is `perfmamba.results.write_json(kind="profile")`: schema_version, environment (device, versions,
git commit), the profile (`ProfileResult.to_dict()`: model and its config, the sweep's config, the measured
peaks, every point with raw samples, the scaling fits) and a top-level "benchmarks" list in the gate's minimal
schema, so `perfmamba compare` can compare two profiles across commits:
`{"name": "profile/<model>/<path>/<mode>/b<batch>/L<seqlen>/<component>", "samples": [...], "unit": "s"}`
(plus ".../total", ".../ttft" and ".../peak_memory" in bytes).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfmamba.profiling.config import ProfileConfig
from perfmamba.profiling.roofline import DevicePeaks
from perfmamba.results import ResultsFileError, read_json, write_json

PROFILE_VERSION = 1  # layout of the profile payload (the file's schema_version is perfmamba.results')
STATUSES = ("ok", "oom", "skipped", "error", "pending")  # pending: planned, not measured yet
RESULT_KIND = "profile"
JSON_FILE, CSV_FILE, TEXT_FILE = "profile.json", "profile.csv", "profile.txt"


@dataclass
class ComponentStats:
    """One component at one point. Times are per call (one forward, or one decode step), in seconds."""

    name: str
    time_s: float | None  # median self time (events / perf_counter); the fused path's split is from kernels
    samples_s: list[float] = field(default_factory=list)
    share: float | None = None  # of the sum over components (other included)
    busy_s: float | None = None  # device time of its kernels (profiler), or CPU op time
    flops: float = 0.0  # cost model
    bytes: float = 0.0
    matmul_flops: float = 0.0
    counted_flops: float | None = None  # torch.utils.flop_counter (matrix products and convolutions)
    intensity: float | None = None
    achieved_flops_per_s: float | None = None
    achieved_bytes_per_s: float | None = None
    roofline_fraction: float | None = None
    bound: str | None = None
    peak_bytes: int | None = None
    allocated_bytes: int | None = None
    retained_bytes: int | None = None


@dataclass
class PointResult:
    path: str
    mode: str
    batch: int
    seqlen: int
    status: str = "pending"
    message: str | None = None
    clock: str | None = None  # "cuda_event" or "perf_counter"
    time_s: float | None = None  # median end-to-end time of one call: a prefill forward, or a decode step (TPOT)
    samples_s: list[float] = field(default_factory=list)
    traced_time_s: float | None = None  # the same call with span timers in
    coverage: float | None = None  # sum of the named components / end-to-end time (median of paired rounds)
    ttft_s: float | None = None  # decode: prefill of the prompt into the cache
    ttft_samples_s: list[float] = field(default_factory=list)
    tokens_per_s: float | None = None
    graph_time_s: float | None = None
    graph_samples_s: list[float] = field(default_factory=list)
    busy_s: float | None = None  # device busy time per call (profiler)
    busy_fraction: float | None = None  # busy_s / time_s
    # the profiler pass's own time per call (CUDA events around its runs): its kernels ran inside it. Where busy_s
    # exceeds time_s, this says whether the GPU ran slower in that pass than in the timed rounds (clocks drop
    # under the back-to-back runs of the largest points), rather than the kernel records being wrong
    profiled_time_s: float | None = None
    launch_bound: bool | None = None
    flops: float | None = None
    bytes: float | None = None
    peak_bytes: int | None = None
    peak_activation_bytes: int | None = None
    allocated_bytes: int | None = None
    memory_method: str | None = None
    cache_bytes_per_sequence: int | None = None  # decode: measured (LayerCache.nbytes / batch)
    cache_bytes_per_sequence_model: int | None = None  # decode: cost model
    wall_s: float | None = None  # seconds spent measuring this point
    components: list[ComponentStats] = field(default_factory=list)
    # fused path: the kernels inside the fused mixer that no class claimed ("op: kernel" -> seconds per call)
    unclassified_kernels: dict[str, float] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.path, self.mode, self.batch, self.seqlen)

    def component(self, name: str) -> ComponentStats | None:
        return next((c for c in self.components if c.name == name), None)


@dataclass
class ScalingFit:
    """time ~ L^k over one series' finished points: `k` over all of them, `k_tail` over the longer half."""

    path: str
    mode: str
    batch: int
    component: str  # a component, "other" or "total"
    k: float
    r2: float
    k_tail: float | None
    seqlens: list[int]


@dataclass
class ModelInfo:
    name: str
    version: int
    config: dict[str, Any]
    params: int
    weights_bytes: int
    device: str
    dtype: str
    backends: dict[str, str]  # op -> the backend that runs it here ("reference", "cuda", a plug-in)


@dataclass
class ProfileResult:
    model: ModelInfo
    config: ProfileConfig
    points: list[PointResult]
    fits: list[ScalingFit] = field(default_factory=list)
    peaks: DevicePeaks | None = None
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def point(self, *, mode: str, seqlen: int, batch: int = 1, path: str = "unfused") -> PointResult:
        for p in self.points:
            if p.key == (path, mode, batch, seqlen):
                return p
        raise KeyError(f"no point path={path} mode={mode} batch={batch} seqlen={seqlen}")

    def ok_points(self) -> list[PointResult]:
        return [p for p in self.points if p.status == "ok"]

    def to_dict(self) -> dict[str, Any]:
        return {"profile_version": PROFILE_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ProfileResult:
        """The inverse of `to_dict` (also accepts a whole result file's dict); raises ValueError naming what is
        missing or malformed."""
        version = doc.get("profile_version")
        if version != PROFILE_VERSION:
            raise ValueError(f"unsupported profile_version {version!r}; this perfmamba reads {PROFILE_VERSION}")
        try:
            config = ProfileConfig(**doc["config"])
            points = []
            for p in doc["points"]:
                p = dict(p)
                p["components"] = [ComponentStats(**c) for c in p.get("components", [])]
                points.append(PointResult(**p))
            return cls(
                model=ModelInfo(**doc["model"]), config=config, points=points,
                fits=[ScalingFit(**f) for f in doc.get("fits", [])],
                peaks=DevicePeaks(**doc["peaks"]) if doc.get("peaks") else None,
                notes=list(doc.get("notes", [])), wall_s=float(doc.get("wall_s", 0.0)),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed profile: {type(e).__name__}: {e}") from e


# Files ----------------------------------------------------------------------------------------------------------------
def _bench_name(model: str) -> str:
    # A checkpoint path would make names differ between machines: keep the directory's name.
    return Path(model).name if ("/" in model or "\\" in model) else model


def gate_entries(result: ProfileResult) -> list[dict[str, Any]]:
    """The gate's minimal schema: raw samples of every finished point's total and components."""
    model = _bench_name(result.model.name)
    out: list[dict[str, Any]] = []
    for p in result.ok_points():
        base = f"profile/{model}/{p.path}/{p.mode}/b{p.batch}/L{p.seqlen}"
        out.append({"name": f"{base}/total", "samples": p.samples_s, "unit": "s"})
        if p.ttft_samples_s:
            out.append({"name": f"{base}/ttft", "samples": p.ttft_samples_s, "unit": "s"})
        for c in p.components:
            if c.samples_s:
                out.append({"name": f"{base}/{c.name}", "samples": c.samples_s, "unit": "s"})
        if p.peak_bytes is not None:
            out.append({"name": f"{base}/peak_memory", "samples": [p.peak_bytes], "unit": "bytes"})
    return out


def write_profile_json(result: ProfileResult, path: str | Path, *, environment: dict[str, Any] | None = None) -> Path:
    """`result` as JSON, with the gate's benchmark entries; `environment` replaces this machine's (for a profile
    measured elsewhere and re-rendered here)."""
    extra = {"environment": environment} if environment is not None else {}
    return write_json(path, {**extra, **result.to_dict(), "benchmarks": gate_entries(result)}, kind=RESULT_KIND)


def validate_profile(doc: dict[str, Any], source: str = "profile") -> ProfileResult:
    """Check a profile document's layout and return it as a `ProfileResult`; ResultsFileError names the
    problem."""
    for key, kind in (("model", dict), ("config", dict), ("points", list), ("benchmarks", list)):
        if not isinstance(doc.get(key), kind):
            raise ResultsFileError(f"{source}: '{key}' must be a {kind.__name__}, got {type(doc.get(key)).__name__}")
    for i, p in enumerate(doc["points"]):
        if not isinstance(p, dict) or p.get("status") not in STATUSES:
            raise ResultsFileError(f"{source}: points[{i}] has no valid status: {p!r:.200}")
        if p["status"] == "ok" and not (isinstance(p.get("time_s"), (int, float)) and p["time_s"] > 0):
            raise ResultsFileError(f"{source}: points[{i}] is ok but its time_s is {p.get('time_s')!r}")
    for i, b in enumerate(doc["benchmarks"]):
        if not (isinstance(b, dict) and isinstance(b.get("name"), str) and isinstance(b.get("samples"), list)):
            raise ResultsFileError(f"{source}: benchmarks[{i}] needs a 'name' and a 'samples' list")
    try:
        return ProfileResult.from_dict(doc)
    except ValueError as e:
        raise ResultsFileError(f"{source}: {e}") from e


def read_profile(path: str | Path) -> ProfileResult:
    """A profile written by `write_profile_json` (a file, or a report directory holding profile.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / JSON_FILE
    return validate_profile(read_json(path, kind=RESULT_KIND), str(path))


CSV_COLUMNS = (
    "model", "path", "mode", "batch", "seqlen", "status", "component", "time_s", "share", "busy_s", "flops",
    "bytes", "matmul_flops", "counted_flops", "intensity", "achieved_flops_per_s", "achieved_bytes_per_s",
    "roofline_fraction", "bound", "peak_bytes", "allocated_bytes", "retained_bytes", "point_time_s", "ttft_s",
    "tokens_per_s", "point_peak_bytes", "cache_bytes_per_sequence", "busy_fraction", "launch_bound",
    "graph_time_s", "message",
)


def csv_rows(result: ProfileResult) -> list[dict[str, Any]]:
    """One row per point and component (one row with an empty component for a point that did not finish)."""
    rows = []
    for p in result.points:
        base = {
            "model": result.model.name, "path": p.path, "mode": p.mode, "batch": p.batch, "seqlen": p.seqlen,
            "status": p.status, "point_time_s": p.time_s, "ttft_s": p.ttft_s, "tokens_per_s": p.tokens_per_s,
            "point_peak_bytes": p.peak_bytes, "cache_bytes_per_sequence": p.cache_bytes_per_sequence,
            "busy_fraction": p.busy_fraction, "launch_bound": p.launch_bound, "graph_time_s": p.graph_time_s,
            "message": p.message,
        }
        if not p.components:
            rows.append({**base, "component": ""})
        for c in p.components:
            rows.append({**base, **{k: getattr(c, k) for k in CSV_COLUMNS if hasattr(c, k) and k != "name"},
                         "component": c.name})
    return rows


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()
