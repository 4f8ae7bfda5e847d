"""Trained tiny models for the eval tests.

TODO(lead): these fixtures belong in tests/conftest.py, where the pruning and benchmark tests can use them too;
once they are there, delete this file.
"""

import functools

import pytest


@pytest.fixture(scope="session")
def trained_model_path():
    """`trained_model_path(preset)`: the folder of `preset` ("mamba1-tiny" or "mamba2-tiny") trained with its
    default recipe on the stdlib corpus. Trained at most once per run (and kept across runs in the cache,
    $PERFMAMBA_CACHE or ~/.cache/perfmamba)."""
    from perfmamba.eval.cache import trained_model_dir

    return functools.cache(lambda preset="mamba1-tiny": trained_model_dir(preset, progress=False))


@pytest.fixture
def trained_model(trained_model_path):
    """`trained_model(preset, device=None)`: a fresh copy of the trained model, free to prune or modify."""
    from perfmamba import load_model

    return lambda preset="mamba1-tiny", device=None: load_model(trained_model_path(preset), device=device)
