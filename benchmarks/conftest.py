"""Shared set-up of the benchmarks: collection of ``bench_*.py``, cached tier states and a
peak-memory probe.

Run with ``python -m pytest benchmarks --benchmark-only`` (the default test run,
``testpaths = ["tests"]``, never reaches this directory). Benchmark modules are named
``bench_*.py`` so that they are not mistaken for tests; ``python_files`` in
pyproject.toml collects them.

Memory is measured in a separate, untimed call under :mod:`tracemalloc` (which traces
numpy's buffers as well as Python objects), because tracing slows allocation-heavy code
down several times and would distort the timings.
"""

from __future__ import annotations

import functools
import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

import placement


@pytest.fixture(scope="session")
def tier_state() -> Callable[[str], placement.State]:
    """``tier_state(name)``: the seeded state of a tier, generated once per session (tier L
    takes several seconds to generate, and several benchmarks share it)."""
    return functools.cache(placement.tier_state)


@pytest.fixture(scope="session")
def peak_memory_mb() -> Callable[..., float]:
    """``peak_memory_mb(fn, *args)``: peak memory (MB, 1e6 bytes) allocated while running
    ``fn(*args)`` once, not counting what existed before the call."""

    def measure(fn: Callable[..., Any], *args: Any) -> float:
        gc.collect()
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            result = fn(*args)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        del result
        return round((peak - before) / 1e6, 1)

    return measure
