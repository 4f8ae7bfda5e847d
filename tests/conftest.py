"""GPU tests carry `@pytest.mark.gpu` (needs a CUDA device) and `@pytest.mark.mamba_ssm` (needs its kernels);
both skip with the reason on machines that lack them.

This directory is on sys.path (pytest's rootdir conftest), so tests import shared helpers as
`from strategies import ...`.

Under pytest-xdist, GPU tests share the GPU, and tests that time it (`exclusive_gpu`) wait until they have it
to themselves: other workers' kernels on the GPU, or their launches on the host, are not the measured call's time.

Some tests need the tiny presets trained (`perfmamba.eval.trained_model`): the first run trains them into the
model cache, minutes of CPU, and `TrainingNotice` says so on the terminal as it goes.
"""

import contextlib
import fcntl
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class TrainingNotice:
    """Wraps the model cache's `train` so that a model trained into the cache says so on the terminal, past
    pytest's output capture and under -q: what is trained, where it is kept, the steps done and the time left at
    the rate measured on this machine. Without it a first run on a 2-core CPU sits silent for a quarter of an hour
    and looks hung. Trainings elsewhere (tests' temporary folders, seconds each) stay quiet."""

    def __init__(self, config: pytest.Config, train: Callable[..., Path], every_s: float = 30.0,
                 first_after_s: float = 10.0) -> None:
        self.config, self.train, self.every_s, self.first_after_s = config, train, every_s, first_after_s

    def say(self, line: str) -> None:
        capture = self.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if self.config.pluginmanager.getplugin("terminalreporter") is None:
                print(line, file=sys.stderr, flush=True)
                return
            writer = self.config.get_terminal_writer()
            if writer.width_of_current_line:  # after -q's dots
                writer.line()
            writer.line(line)
            writer.flush()  # a CI log is not line-buffered

    def __call__(self, config, out, **kwargs) -> Path:
        from perfmamba.eval import cache_root
        from perfmamba.eval.perplexity import resolve_device

        out = Path(out)
        if not out.resolve().is_relative_to(cache_root().resolve()):
            return self.train(config, out, **kwargs)
        device = resolve_device(kwargs.get("device"))
        self.say(f"perfmamba: training {config.preset} ({config.steps} steps on {device}) once, for the tests that "
                 "need a trained model: minutes on a CPU; the time left on this machine follows.")
        self.say(f"  kept in {out} ($PERFMAMBA_CACHE, else ~/.cache/perfmamba): later runs load it from there")
        start = time.perf_counter()
        next_at, since, steps_since = start + self.first_after_s, start, 0
        on_step = kwargs.pop("on_step", None)

        def report(done: int, loss: float) -> None:
            nonlocal next_at, since, steps_since
            steps_since += 1
            now = time.perf_counter()
            if now >= next_at or done == config.steps:
                # The rate since the last report, not since the start: on a shared machine it swings tenfold
                # as other jobs come and go, and the time left should follow.
                rate = (now - since) / steps_since
                left = (f"~{_duration(rate * (config.steps - done))} to go" if done < config.steps
                        else f"scoring {config.eval_tokens or 'all'} held-out tokens")
                self.say(f"  {config.preset}: step {done}/{config.steps}, loss {loss:.2f}, {rate:.2f} s/step, {left}")
                next_at, since, steps_since = now + self.every_s, now, 0
            if on_step is not None:
                on_step(done, loss)

        path = self.train(config, out, **{**kwargs, "progress": False, "on_step": report})
        self.say(f"perfmamba: {config.preset} trained in {_duration(time.perf_counter() - start)}")
        return path


@contextlib.contextmanager
def _gpu_lock(exclusive: bool):
    """A readers-writer lock over the xdist workers of one run: GPU tests share it, `exclusive_gpu` tests hold it
    alone. A writer first closes the gate, so that a stream of short GPU tests cannot starve it."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None or not torch.cuda.is_available():
        yield
        return
    base = Path(tempfile.gettempdir()) / f"perfmamba-gpu-{run}"
    with open(f"{base}.gate", "a") as gate, open(f"{base}.lock", "a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            # Give back what this worker's allocator cached before the others go on: eight workers that each keep
            # a 130m profile's blocks can leave a timing test so little memory that its allocations retry (free
            # the cache, synchronise), which lands in its timed rounds.
            gc.collect()
            torch.cuda.empty_cache()
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _shared_gpu(request):
    exclusive = "exclusive_gpu" in request.fixturenames
    if "gpu" in request.keywords and not exclusive:
        with _gpu_lock(exclusive=False):
            yield
    else:
        yield


@pytest.fixture
def exclusive_gpu():
    """The GPU to this test alone while it runs (for tests that assert on timings)."""
    with _gpu_lock(exclusive=True):
        yield


@pytest.fixture(scope="session", autouse=True)
def _training_notice(pytestconfig):
    from perfmamba.eval import cache

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cache, "train", TrainingNotice(pytestconfig, cache.train))
        yield
