"""Shared fixtures for the profiler tests: one quick CPU profile of each tiny model, reused by every test that
only reads a result (profiling is the slow part)."""

from __future__ import annotations

import functools

import pytest
from profiling_configs import QUICK, TINY

from perfmamba.profiling import profile


@functools.cache
def _profile(version: int):
    return profile(TINY[version], QUICK, name=f"tiny{version}")


@pytest.fixture(params=[1, 2], ids=["mamba1", "mamba2"])
def tiny_profile(request):
    return _profile(request.param)


@pytest.fixture
def tiny1_profile():
    return _profile(1)
