"""Callables that take a known time and log their calls, for the tests of timing and of the benchmark harness."""

import time


def sleeper(seconds, log=None, name=None):
    def fn():
        if log is not None:
            log.append(name)
        time.sleep(seconds)

    return fn
