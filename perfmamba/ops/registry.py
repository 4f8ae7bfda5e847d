"""One registry for every op: which implementations exist, which are usable here, which one runs.

Backends: "reference" (pure PyTorch, CPU and CUDA), "cuda" (mamba-ssm / causal-conv1d kernels) and plug-ins that
a kernel developer registers by dotted path. "auto" resolves to the active plug-in for the op if there is one,
else, for CUDA tensors, to the op's CUDA default (a backend registered with `cuda_auto=True`, such as the measured
selector "fastest", else "cuda") when it can run, else to "reference". Asking for "cuda" where it cannot run is an
error, never a silent fallback.

Plug-ins reach every test and benchmark through the environment:
    PERFMAMBA_OPS="selective_scan=mypkg.scan:selective_scan,ssd_scan=mypkg.ssd:ssd_scan"
The variable is read the first time the registry is asked about an op, not at import.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

ENV_VAR = "PERFMAMBA_OPS"
BUILTIN = ("reference", "cuda")
RESERVED = ("auto", *BUILTIN)


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run this op here (no GPU, kernel not installed, CPU tensors...)."""


@dataclass
class _Op:
    name: str
    impls: dict[str, Callable] = field(default_factory=dict)
    # Returns None when usable, else the reason it is not (checked lazily: importing mamba-ssm is slow).
    availability: dict[str, Callable[[], str | None]] = field(default_factory=dict)
    active_plugin: str | None = None
    cuda_auto: str = "cuda"  # what "auto" runs for CUDA tensors (when it can run there)


_OPS: dict[str, _Op] = {}
# $PERFMAMBA_OPS is activated on the first question to the registry (after every built-in op has registered):
# None not yet, False in progress, True done. A bad value raises on every question until it is fixed.
_env_loaded: bool | None = None


def register(
    op: str, backend: str, fn: Callable | None = None, *, availability: Callable[[], str | None] | None = None,
    cuda_auto: bool = False,
):
    """Register `fn` as `backend` of `op` (usable as a decorator). `cuda_auto`: "auto" runs it for CUDA tensors
    in place of "cuda" (falling back to "cuda" where it cannot run)."""

    def add(f: Callable) -> Callable:
        entry = _OPS.setdefault(op, _Op(op))
        entry.impls[backend] = f
        if availability is not None:
            entry.availability[backend] = availability
        if cuda_auto:
            entry.cuda_auto = backend
        return f

    return add(fn) if fn is not None else add


def _ensure_env_plugins() -> None:
    global _env_loaded
    if _env_loaded is None:
        _env_loaded = False
        try:
            load_env_plugins()
        except BaseException:
            _env_loaded = None
            raise
        _env_loaded = True


def _op(op: str) -> _Op:
    _ensure_env_plugins()
    try:
        return _OPS[op]
    except KeyError:
        raise ValueError(f"unknown op {op!r}; known ops: {', '.join(sorted(_OPS))}") from None


def load_callable(path: str) -> Callable:
    """Import 'package.module:function' (or 'package.module.function')."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"plug-in path must look like 'package.module:function', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any failure while importing the user's module is reported as theirs
        raise ValueError(f"cannot load plug-in {path!r}: importing {module_name!r} failed: "
                         f"{type(e).__name__}: {e}") from e
    obj = getattr(module, attr, None)
    if obj is None:
        raise ValueError(f"cannot load plug-in {path!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(obj):
        raise ValueError(f"plug-in {path!r} is not callable (got {type(obj).__name__})")
    return obj


def plug_in(op: str, target: str | Callable, name: str = "plugin", *, activate: bool = True) -> str:
    """Register a plug-in implementation of `op` (a callable or a dotted path 'package.module:function') under
    `name`, and make "auto" run it (unless activate=False). Returns the name.

    The plug-in takes the op's signature minus `backend`: the leading tensors positionally, the optional
    arguments by keyword, exactly as `perfmamba.ops.<op>` receives them."""
    entry = _op(op)
    if name in RESERVED:
        raise ValueError(f"plug-in name {name!r} is reserved; pick another than {', '.join(RESERVED)}")
    fn = load_callable(target) if isinstance(target, str) else target
    if not callable(fn):
        raise ValueError(f"plug-in for {op} must be callable, got {type(fn).__name__}")
    entry.impls[name] = fn
    if activate:
        entry.active_plugin = name
    return name


def unplug(op: str) -> None:
    """Stop routing "auto" to a plug-in for `op`."""
    _op(op).active_plugin = None


@contextlib.contextmanager
def use(op: str, target: str | Callable) -> Iterator[None]:
    """Within the block, "auto" runs `target` for `op`: a registered backend or plug-in name ("reference",
    "cuda", ...), a dotted path 'package.module:function' or a callable."""
    entry = _op(op)
    previous = entry.active_plugin
    if isinstance(target, str) and target in entry.impls:
        entry.active_plugin = target
    elif isinstance(target, str) and ":" not in target and "." not in target:
        raise ValueError(
            f"unknown backend {target!r} for {op}; registered: {', '.join(entry.impls)}, "
            f"or a plug-in as 'package.module:function'"
        )
    else:
        plug_in(op, target, name=f"plugin:{target}" if isinstance(target, str) else "plugin")
    try:
        yield
    finally:
        entry.active_plugin = previous


def load_env_plugins(value: str | None = None) -> list[str]:
    """Activate the plug-ins named in $PERFMAMBA_OPS (or `value`): 'op=pkg.mod:fn,op2=...'. Returns the ops.

    Called on the registry's first use, so a plug-in set in the environment reaches every test, benchmark and
    subprocess; call it again after changing the variable."""
    value = os.environ.get(ENV_VAR, "") if value is None else value
    activated = []
    for item in filter(None, (s.strip() for s in value.split(","))):
        op, sep, path = (part.strip() for part in item.partition("="))
        if not sep or not op or not path:
            raise ValueError(f"{ENV_VAR} entries must be 'op=package.module:function', got {item!r}")
        try:
            plug_in(op, path, name=f"plugin:{path}")
        except ValueError as e:
            raise ValueError(f"{ENV_VAR}={value!r}: {e}") from e
        activated.append(op)
    return activated


def unavailable_reason(op: str, backend: str) -> str | None:
    entry = _op(op)
    if backend not in entry.impls:
        return f"no {backend!r} implementation of {op} (have: {', '.join(entry.impls)})"
    check = entry.availability.get(backend)
    return check() if check is not None else None


def _auto(entry: _Op, on_cuda: bool) -> str:
    """What "auto" runs without a plug-in: for CUDA tensors the op's CUDA default, else "cuda", whichever first
    can run (asked in that order and no further: this runs on every call of every op); else the reference."""
    if on_cuda:
        for backend in dict.fromkeys((entry.cuda_auto, "cuda")):
            if backend in entry.impls and unavailable_reason(entry.name, backend) is None:
                return backend
    return "reference" if "reference" in entry.impls else "cuda"


def resolve(op: str, backend: str = "auto", *tensors: torch.Tensor | None) -> tuple[str, Callable]:
    """The (backend name, function) that runs `op` for these tensors."""
    entry = _op(op)
    on_cuda = any(t is not None and t.is_cuda for t in tensors)
    if backend == "auto":
        backend = entry.active_plugin or _auto(entry, on_cuda)
    if backend not in entry.impls:
        raise ValueError(f"unknown backend {backend!r} for {op}; available: auto, {', '.join(entry.impls)}")
    reason = unavailable_reason(op, backend)
    if reason is not None:
        raise BackendUnavailableError(f"backend {backend!r} for {op} is unavailable: {reason}")
    if backend == "cuda" and not on_cuda:
        raise BackendUnavailableError(f"backend 'cuda' for {op} needs CUDA tensors, got CPU tensors")
    return backend, entry.impls[backend]


def backend_status() -> dict[str, dict[str, str]]:
    """Per op and backend: "available" or "unavailable: <reason>". When a plug-in or `use` override is active
    for an op, its row also has "auto": the name that "auto" runs; an op whose CUDA default is not "cuda" has
    "auto_on_cuda"."""
    _ensure_env_plugins()
    status = {}
    for name, entry in sorted(_OPS.items()):
        row = {}
        for backend in entry.impls:
            reason = unavailable_reason(name, backend)
            row[backend] = "available" if reason is None else f"unavailable: {reason}"
        if entry.active_plugin is not None:
            row["auto"] = entry.active_plugin
        if entry.cuda_auto != "cuda":
            row["auto_on_cuda"] = entry.cuda_auto
        status[name] = row
    return status


def ops() -> list[str]:
    _ensure_env_plugins()
    return sorted(_OPS)
