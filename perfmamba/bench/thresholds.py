"""The benchmark thresholds: one reviewed file (`thresholds.toml` beside this module), a section per device class.

`load_thresholds()` reads the section of this machine's device class (`device_class()`, or
$PERFMAMBA_DEVICE_CLASS) and rejects anything it does not know: a typo in a reviewed threshold must fail loudly,
not switch an assertion off. The `assert_*` helpers raise `ThresholdError` (an AssertionError, so pytest shows
it as a failure) whose message holds the measured number, the threshold and where the threshold is written.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from perfmamba.bench.cases import LEVELS, MODES, Case
from perfmamba.checks import check_at_least, check_choice, check_in_range, check_relative_change
from perfmamba.results import parse_toml

ENV_VAR = "PERFMAMBA_DEVICE_CLASS"
# Substrings of torch.cuda.get_device_name() -> device class; first match wins.
GPU_CLASSES: tuple[tuple[str, str], ...] = (("H200", "h200"), ("H100", "h100"), ("A100", "a100"), ("L4", "l4"))

SCALARS = {
    "kernel_max_rel_error": "max |plug-in - reference| / max |reference| of any plugged-in kernel (float32)",
    "plugin_max_slowdown": "max median of plug-in_i / built-in_i (the backend it replaces), op-level cases",
}
RULES = {  # table -> (bound key, what the bound limits)
    "speedup": ("min", "median of dense_i / pruned_i over rounds timed interleaved in one process"),
    "memory": ("min", "1 - peak GPU memory(pruned) / peak(dense) of one call"),
    "cache": ("min", "1 - decode cache bytes(pruned) / bytes(dense)"),
    "perplexity": ("max", "perplexity(pruned) / perplexity(dense) - 1, trained model, held-out text"),
    "vs_mamba_ssm": ("max", "median of ours_i / mamba-ssm_i over rounds timed interleaved in one process, same "
                            "weights (the vs_mamba_ssm level)"),
}
MATCH_KEYS = ("version", "level", "mode", "seqlen", "ratio", "criterion")
# [<class>.gate]: what `perfmamba gate` tolerates between BASE and PR on this device class.
GATE_KEYS = {
    "default": "relative change tolerated where no pattern matches (0.01 = 1%)",
    "host_timed": "relative change tolerated for host-timed GPU samples (absent: not judged)",
    "patterns": "table of {benchmark-name glob: relative change}; the first match wins",
    "processes": "benchmark processes per side when `perfmamba gate --processes` is not given (default 3)",
    "cross_device_spread": "measured spread of the same work across the host's GPUs; a benchmark timed on two "
                           "GPUs is judged only where it is within the threshold (absent: never)",
}
DEFAULT_GATE_THRESHOLD = 0.02


class ThresholdsFileError(ValueError):
    """The thresholds file is malformed or has no section for this device class."""


class ThresholdError(AssertionError):
    """A measured number is on the wrong side of its reviewed threshold."""


def device_class() -> str:
    """$PERFMAMBA_DEVICE_CLASS, else "cpu" without CUDA, else the GPU family ("h100", "h200", ...)."""
    forced = os.environ.get(ENV_VAR)
    if forced:
        return forced
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name(torch.cuda.current_device())
    for needle, cls in GPU_CLASSES:
        if needle in name:
            return cls
    # An unknown GPU gets its own class name; load_thresholds then says there is no section for it.
    return name.lower().replace("nvidia", "").strip().replace(" ", "-")


@dataclass(frozen=True)
class Rule:
    kind: str  # a key of RULES
    bound: float
    version: int | None = None
    level: str | None = None
    mode: str | None = None
    seqlen: int | None = None
    ratio: float | None = None
    criterion: str | None = None
    where: str = ""  # "thresholds.toml [cpu.speedup] #2", for messages

    def matches(self, case: Case) -> bool:
        return (
            (self.version is None or self.version == case.version)
            and (self.level is None or self.level == case.level)
            and (self.mode is None or self.mode == case.mode)
            and (self.seqlen is None or self.seqlen == case.seqlen)
            and (self.ratio is None or math.isclose(self.ratio, case.ratio, abs_tol=1e-9))
            and (self.criterion is None or self.criterion == case.criterion)
        )

    @property
    def specificity(self) -> int:
        return sum(getattr(self, k) is not None for k in MATCH_KEYS)


@dataclass(frozen=True)
class GateThresholds:
    """The `[<class>.gate]` table: the gate's tolerated change per benchmark on this device class."""

    default: float = DEFAULT_GATE_THRESHOLD
    host_timed: float | None = None
    patterns: tuple[tuple[str, float], ...] = ()
    processes: int = 3  # per side, when `perfmamba gate --processes` is not given
    cross_device_spread: float | None = None


@dataclass(frozen=True)
class Thresholds:
    device_class: str
    kernel_max_rel_error: float
    plugin_max_slowdown: float
    rules: tuple[Rule, ...]
    source: str
    gate: GateThresholds = GateThresholds()

    def rule(self, kind: str, case: Case) -> Rule | None:
        """The most specific rule of `kind` that applies to `case` (None: nothing is asserted)."""
        if kind not in RULES:
            raise ValueError(f"unknown threshold kind {kind!r}; known: {', '.join(RULES)}")
        matching = [r for r in self.rules if r.kind == kind and r.matches(case)]
        return max(matching, key=lambda r: r.specificity, default=None)


def default_path() -> Path:
    return Path(str(resources.files("perfmamba.bench").joinpath("thresholds.toml")))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ThresholdsFileError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _rule(kind: str, table: Any, where: str) -> Rule:
    if not isinstance(table, dict):
        raise ThresholdsFileError(f"{where}: expected a table ([[...]]), got {table!r}")
    bound_key = RULES[kind][0]
    allowed = (bound_key, *MATCH_KEYS)
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ThresholdsFileError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")
    if bound_key not in table:
        raise ThresholdsFileError(f"{where}: missing {bound_key!r} ({RULES[kind][1]})")
    fields: dict[str, Any] = {"kind": kind, "bound": _number(table[bound_key], f"{where} {bound_key}"), "where": where}
    if "version" in table:
        if table["version"] not in (1, 2):
            raise ThresholdsFileError(f"{where}: version must be 1 or 2, got {table['version']!r}")
        fields["version"] = table["version"]
    for key, allowed_values in (("level", LEVELS), ("mode", MODES)):
        if key in table:
            check_choice(f"{where}: {key}", table[key], allowed_values, error=ThresholdsFileError)
            fields[key] = table[key]
    if "seqlen" in table:
        check_at_least(f"{where}: seqlen", table["seqlen"], error=ThresholdsFileError)
        fields["seqlen"] = table["seqlen"]
    if "ratio" in table:
        ratio = _number(table["ratio"], f"{where} ratio")
        check_in_range(f"{where}: ratio", ratio, 0, 1, closed="()", error=ThresholdsFileError)
        fields["ratio"] = ratio
    if "criterion" in table:
        if not isinstance(table["criterion"], str):
            raise ThresholdsFileError(f"{where}: criterion must be a string, got {table['criterion']!r}")
        fields["criterion"] = table["criterion"]
    return Rule(**fields)


def _relative(value: Any, where: str) -> float:
    return check_relative_change(where, value, error=ThresholdsFileError)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ThresholdsFileError(f"{where}: expected an integer >= 1, got {value!r}")
    return value


def _gate(table: Any, where: str) -> GateThresholds:
    if not isinstance(table, dict):
        raise ThresholdsFileError(f"{where}: expected a table, got {table!r}")
    unknown = sorted(set(table) - set(GATE_KEYS))
    if unknown:
        raise ThresholdsFileError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(GATE_KEYS)}")
    patterns = table.get("patterns", {})
    if not isinstance(patterns, dict):
        raise ThresholdsFileError(f"{where}.patterns: expected a table of {{glob: threshold}}, got {patterns!r}")
    return GateThresholds(
        default=_relative(table.get("default", DEFAULT_GATE_THRESHOLD), f"{where} default"),
        host_timed=_relative(table["host_timed"], f"{where} host_timed") if "host_timed" in table else None,
        patterns=tuple((str(k), _relative(v, f"{where}.patterns {k!r}")) for k, v in patterns.items()),
        processes=_count(table.get("processes", 3), f"{where} processes"),
        cross_device_spread=(_relative(table["cross_device_spread"], f"{where} cross_device_spread")
                             if "cross_device_spread" in table else None),
    )


def parse_thresholds(doc: dict[str, Any], device_class_name: str, source: str = "thresholds.toml") -> Thresholds:
    """Validate every section of `doc` (so that a typo anywhere fails on any machine) and return one."""
    if not doc:
        raise ThresholdsFileError(f"{source}: no device class sections")
    parsed: dict[str, Thresholds] = {}
    for cls, section in doc.items():
        if not isinstance(section, dict):
            raise ThresholdsFileError(f"{source}: [{cls}] must be a table, got {section!r}")
        allowed = (*SCALARS, *RULES, "gate")
        unknown = sorted(set(section) - set(allowed))
        if unknown:
            raise ThresholdsFileError(f"{source} [{cls}]: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")
        for key in SCALARS:
            if key not in section:
                raise ThresholdsFileError(f"{source} [{cls}]: missing {key!r} ({SCALARS[key]})")
        rules: list[Rule] = []
        for kind in RULES:
            tables = section.get(kind, [])
            if not isinstance(tables, list):
                raise ThresholdsFileError(f"{source} [{cls}.{kind}]: write rules as [[{cls}.{kind}]] tables")
            rules += [_rule(kind, t, f"{source} [[{cls}.{kind}]] #{i + 1}") for i, t in enumerate(tables)]
        seen: dict[tuple, str] = {}
        for r in rules:
            key = (r.kind, *(getattr(r, k) for k in MATCH_KEYS))
            if key in seen:
                raise ThresholdsFileError(f"{r.where}: same conditions as {seen[key]}; keep one")
            seen[key] = r.where
        parsed[cls] = Thresholds(
            device_class=cls,
            kernel_max_rel_error=_number(section["kernel_max_rel_error"], f"{source} [{cls}] kernel_max_rel_error"),
            plugin_max_slowdown=_number(section["plugin_max_slowdown"], f"{source} [{cls}] plugin_max_slowdown"),
            rules=tuple(rules),
            source=source,
            gate=_gate(section.get("gate", {}), f"{source} [{cls}.gate]"),
        )
    if device_class_name not in parsed:
        raise ThresholdsFileError(
            f"{source}: no thresholds for device class {device_class_name!r}; it has: {', '.join(parsed)} "
            f"(add a [{device_class_name}] section, or set ${ENV_VAR} to one of those)"
        )
    return parsed[device_class_name]


def load_thresholds(device_class_name: str | None = None, path: str | os.PathLike | None = None) -> Thresholds:
    """The thresholds of `device_class_name` (default: this machine's) from `path` (default: the packaged file)."""
    path = Path(path) if path is not None else default_path()
    try:
        doc = parse_toml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ThresholdsFileError(f"{path}: no such thresholds file") from None
    except ValueError as e:
        raise ThresholdsFileError(f"{path}: not valid TOML ({e})") from e
    return parse_thresholds(doc, device_class_name or device_class(), source=str(path))


# Assertions --------------------------------------------------------------------------------------------------
def _fail(what: str, case_id: str, measured: float, relation: str, bound: float, where: str) -> ThresholdError:
    return ThresholdError(f"{case_id}: {what} {measured:.4g} {relation} threshold {bound:.4g} ({where})")


def assert_rule(thresholds: Thresholds, kind: str, case: Case, measured: float) -> Rule | None:
    """Check `measured` against the rule of `kind` for `case`, if there is one; returns the rule applied."""
    rule = thresholds.rule(kind, case)
    if rule is None:
        return None
    bound_key, meaning = RULES[kind]
    if bound_key == "min" and not measured >= rule.bound:
        raise _fail(f"{kind} ({meaning})", case.id, measured, "is below the minimum", rule.bound, rule.where)
    if bound_key == "max" and not measured <= rule.bound:
        raise _fail(f"{kind} ({meaning})", case.id, measured, "is above the maximum", rule.bound, rule.where)
    return rule


def _assert_at_most(thresholds: Thresholds, key: str, what: str, measured: float, case_id: str) -> None:
    bound = getattr(thresholds, key)
    if not measured <= bound:
        raise _fail(what, case_id, measured, "is above the maximum", bound,
                    f"{thresholds.source} [{thresholds.device_class}] {key}")


def assert_kernel_error(thresholds: Thresholds, op: str, backend: str, rel_error: float, case_id: str) -> None:
    _assert_at_most(thresholds, "kernel_max_rel_error", f"{op} via backend {backend!r}: relative error vs the "
                    "reference", rel_error, case_id)


def assert_plugin_slowdown(thresholds: Thresholds, op: str, backend: str, slowdown: float, case_id: str) -> None:
    _assert_at_most(thresholds, "plugin_max_slowdown", f"{op} via plug-in {backend!r}: slowdown vs the built-in "
                    "backend", slowdown, case_id)
