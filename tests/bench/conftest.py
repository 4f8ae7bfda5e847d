"""Benchmarks are timed on one CPU thread with subnormals flushed (perfmamba.timing.configure_process);
the tests of the suite do the same and put torch's settings back afterwards for the rest of the test run. The
allocator's settings (timing.heap_allocations) stay: they change where memory comes from, not results."""

import pytest
import torch

from perfmamba.timing import configure_process


@pytest.fixture
def cpu_bench():
    """The CPU device, configured as the benchmark processes are."""
    threads = torch.get_num_threads()
    configure_process(cpu_threads=1)
    yield torch.device("cpu")
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)  # torch's default; it has no getter to restore from
