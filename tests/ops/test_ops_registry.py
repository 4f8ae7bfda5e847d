"""The op registry: backend resolution, plug-ins by dotted path, `use`, $PERFMAMBA_OPS, and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from perfmamba import ops
from perfmamba.ops import registry
from perfmamba.ops.registry import BackendUnavailableError

PLUGIN = '''
import torch
from perfmamba.ops import selective_scan_ref

CALLS = []

def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False):
    CALLS.append(dict(D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                      return_last_state=return_last_state))
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state) * 2

def rms_norm(x, weight, eps=1e-5):
    return torch.full_like(x, 7.0)

NOT_CALLABLE = 3
'''


@pytest.fixture(autouse=True)
def restore_registry():
    """Each test leaves the registry as it found it (plug-ins registered, overrides active)."""
    saved = {name: (dict(entry.impls), entry.active_plugin) for name, entry in registry._OPS.items()}
    yield
    for name, (impls, active) in saved.items():
        registry._OPS[name].impls, registry._OPS[name].active_plugin = impls, active


@pytest.fixture
def plugin_module(tmp_path, monkeypatch) -> str:
    """A kernel developer's package on sys.path; returns its module name."""
    name = f"my_kernels_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def scan_inputs():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, 2, 5, generator=g), torch.rand(1, 2, 5, generator=g), -torch.rand(2, 3, generator=g),
            torch.randn(1, 3, 5, generator=g), torch.randn(1, 3, 5, generator=g))


def test_auto_resolves_to_reference_for_cpu_tensors():
    u = torch.zeros(1)
    assert ops.resolve("selective_scan", "auto", u) == ("reference", ops.selective_scan_ref)
    assert ops.resolve("ssd_scan", "reference", u) == ("reference", ops.ssd_scan_ref)
    assert ops.resolve("rms_norm_gated", "auto", u)[0] == "reference"


def test_backend_status_lists_every_op_and_backend():
    status = ops.backend_status()
    expected = {"selective_scan", "selective_state_update", "ssd_scan", "causal_conv1d", "causal_conv1d_update",
                "rms_norm", "add_rms_norm", "rms_norm_gated", "mamba_inner", "mamba_split_conv1d_scan"}
    assert expected <= set(status)
    for op in expected - {"mamba_inner", "mamba_split_conv1d_scan"}:
        assert status[op]["reference"] == "available"
    for op in expected:
        assert status[op]["cuda"] == "available" or status[op]["cuda"].startswith("unavailable: ")
    assert "reference" not in status["mamba_inner"]  # fused kernels have no reference backend


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_gpu_raises_with_the_reason():
    with pytest.raises(BackendUnavailableError, match=r"backend 'cuda' for selective_scan is unavailable: no CUDA"):
        ops.selective_scan(*scan_inputs(), backend="cuda")
    with pytest.raises(BackendUnavailableError, match="no reference backend"):
        ops.mamba_inner(torch.zeros(1, 4, 3), *[None] * 7)
    assert isinstance(BackendUnavailableError("x"), RuntimeError)


def test_cuda_with_cpu_tensors_raises(monkeypatch):
    """Even where the kernel imports, CPU tensors are not silently sent to the reference."""
    monkeypatch.setitem(registry._OPS["selective_scan"].availability, "cuda", lambda: None)
    with pytest.raises(BackendUnavailableError, match="needs CUDA tensors, got CPU tensors"):
        ops.selective_scan(*scan_inputs(), backend="cuda")


def test_unknown_backend_and_op_name_the_choices():
    with pytest.raises(ValueError, match=r"unknown backend 'triton' for selective_scan; available: auto, reference"):
        ops.selective_scan(*scan_inputs(), backend="triton")
    with pytest.raises(ValueError, match=r"unknown op 'scan'; known ops: .*selective_scan"):
        ops.resolve("scan", "auto")


def test_plug_in_by_dotted_path_routes_auto(plugin_module):
    name = ops.plug_in("selective_scan", f"{plugin_module}:selective_scan", name="mine")
    assert name == "mine"
    args = scan_inputs()
    backend, fn = ops.resolve("selective_scan", "auto", args[0])
    assert backend == "mine" and fn is sys.modules[plugin_module].selective_scan
    got = ops.selective_scan(*args, D=torch.ones(2), delta_softplus=True)
    want = ops.selective_scan(*args, D=torch.ones(2), delta_softplus=True, backend="reference")
    torch.testing.assert_close(got, want * 2)
    assert sys.modules[plugin_module].CALLS[-1]["delta_softplus"] is True  # options arrive by keyword
    assert ops.backend_status()["selective_scan"]["mine"] == "available"
    assert ops.backend_status()["selective_scan"]["auto"] == "mine"
    # explicit backends still reach the built-ins, and the plug-in stays callable by name after unplug
    assert ops.resolve("selective_scan", "reference", args[0])[0] == "reference"
    ops.unplug("selective_scan")
    assert ops.resolve("selective_scan", "auto", args[0])[0] == "reference"
    torch.testing.assert_close(ops.selective_scan(*args, backend="mine"), ops.selective_scan(*args) * 2)


def test_plug_in_module_dot_function_form_and_callable(plugin_module):
    ops.plug_in("rms_norm", f"{plugin_module}.rms_norm", name="dotted")
    assert ops.rms_norm(torch.zeros(2, 3), torch.ones(3)).eq(7).all()
    ops.plug_in("rms_norm", lambda x, weight, eps=1e-5: x + 1, name="lambda")
    assert ops.rms_norm(torch.zeros(2, 3), torch.ones(3)).eq(1).all()


def test_use_is_temporary(plugin_module):
    x, w = torch.randn(2, 3), torch.ones(3)
    reference = ops.rms_norm(x, w)
    with ops.use("rms_norm", f"{plugin_module}:rms_norm"):
        assert ops.resolve("rms_norm", "auto", x)[0] == f"plugin:{plugin_module}:rms_norm"
        assert ops.rms_norm(x, w).eq(7).all()
        with ops.use("rms_norm", "reference"):
            torch.testing.assert_close(ops.rms_norm(x, w), reference)
        assert ops.rms_norm(x, w).eq(7).all()
    torch.testing.assert_close(ops.rms_norm(x, w), reference)
    assert "auto" not in ops.backend_status()["rms_norm"]


def test_use_restores_on_error(plugin_module):
    with pytest.raises(RuntimeError, match="boom"), ops.use("rms_norm", f"{plugin_module}:rms_norm"):
        raise RuntimeError("boom")
    assert ops.resolve("rms_norm", "auto", torch.zeros(1))[0] == "reference"


@pytest.mark.parametrize(
    "path, message",
    [
        ("no_such_pkg_xyz.mod:fn", r"cannot load plug-in 'no_such_pkg_xyz.mod:fn': importing 'no_such_pkg_xyz.mod'"),
        ("{mod}:missing", r"module '{mod}' has no attribute 'missing'"),
        ("{mod}:NOT_CALLABLE", r"plug-in '{mod}:NOT_CALLABLE' is not callable"),
        ("justaname", r"must look like 'package.module:function', got 'justaname'"),
        (":fn", r"must look like 'package.module:function'"),
    ],
)
def test_bad_plugin_paths_are_named_in_the_error(plugin_module, path, message):
    path, message = path.format(mod=plugin_module), message.format(mod=plugin_module)
    with pytest.raises(ValueError, match=message):
        ops.plug_in("selective_scan", path)
    assert ops.resolve("selective_scan", "auto", torch.zeros(1))[0] == "reference"  # nothing half-registered


def test_use_with_an_unknown_name_lists_the_backends():
    with pytest.raises(ValueError, match=r"unknown backend 'triton' for ssd_scan; registered: reference, cuda"):
        with ops.use("ssd_scan", "triton"):
            pass


def test_reserved_plugin_names():
    for name in ("auto", "reference", "cuda"):
        with pytest.raises(ValueError, match="is reserved"):
            ops.plug_in("ssd_scan", lambda *a, **k: None, name=name)


def test_load_env_plugins(plugin_module, monkeypatch):
    value = f" selective_scan={plugin_module}:selective_scan , rms_norm={plugin_module}:rms_norm"
    monkeypatch.setenv(registry.ENV_VAR, value)
    assert registry.load_env_plugins() == ["selective_scan", "rms_norm"]
    assert ops.resolve("selective_scan", "auto", torch.zeros(1))[0] == f"plugin:{plugin_module}:selective_scan"
    assert ops.rms_norm(torch.zeros(1, 2), torch.ones(2)).eq(7).all()
    assert registry.load_env_plugins("") == []


@pytest.mark.parametrize(
    "value, message",
    [
        ("selective_scan", r"PERFMAMBA_OPS entries must be 'op=package.module:function', got 'selective_scan'"),
        ("selective_scan=", r"PERFMAMBA_OPS entries must be"),
        ("nope=a.b:c", r"PERFMAMBA_OPS='nope=a.b:c': unknown op 'nope'"),
        ("ssd_scan=no_such_pkg_xyz:fn", r"PERFMAMBA_OPS=.*cannot load plug-in 'no_such_pkg_xyz:fn'"),
    ],
)
def test_bad_env_values_are_named_in_the_error(value, message):
    with pytest.raises(ValueError, match=message):
        registry.load_env_plugins(value)


def test_env_var_reaches_a_fresh_process(plugin_module, tmp_path):
    """Set in the environment, a plug-in is active from `import perfmamba` on: what subprocesses, test runs
    and benchmarks see."""
    env = dict(os.environ)
    env[registry.ENV_VAR] = f"selective_scan={plugin_module}:selective_scan"
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(root), env.get("PYTHONPATH", "")])
    code = textwrap.dedent("""
        import torch, perfmamba
        print(perfmamba.ops.resolve("selective_scan", "auto", torch.zeros(1))[0])
        print(perfmamba.ops.resolve("ssd_scan", "auto", torch.zeros(1))[0])
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [f"plugin:{plugin_module}:selective_scan", "reference"]

    env[registry.ENV_VAR] = "selective_scan=no_such_pkg_xyz:fn"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "no_such_pkg_xyz:fn" in out.stderr and "PERFMAMBA_OPS" in out.stderr


class _CudaTensor:
    """Stands in for a CUDA tensor where resolution only asks `is_cuda`."""

    is_cuda = True


def test_auto_runs_an_ops_cuda_default_for_cuda_tensors_and_falls_back_to_cuda():
    calls = []
    registry.register("toy_op", "reference", lambda x: calls.append("reference"))
    registry.register("toy_op", "cuda", lambda x: calls.append("cuda"))
    registry.register("toy_op", "picker", lambda x: calls.append("picker"), cuda_auto=True,
                      availability=lambda: "picker is off" if calls else None)
    try:
        assert ops.resolve("toy_op", "auto", _CudaTensor())[0] == "picker"
        assert ops.resolve("toy_op", "auto", torch.zeros(1))[0] == "reference"  # CPU tensors never take it
        assert ops.backend_status()["toy_op"]["auto_on_cuda"] == "picker"
        calls.append("x")  # the picker reports itself unavailable from now on
        assert ops.resolve("toy_op", "auto", _CudaTensor())[0] == "cuda"
    finally:
        registry._OPS.pop("toy_op")


def test_the_decode_step_defaults_to_the_measured_choice_on_cuda():
    assert registry._op("selective_state_update").cuda_auto == "fastest"
    assert registry._op("selective_scan").cuda_auto == "cuda"
