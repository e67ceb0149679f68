"""Timing for benchmarks: functions measured in turn, so machine load hits every one of them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def interleaved_times(fns: Sequence[Callable[[], Any]], reps: int) -> list[list[float]]:
    """Seconds of each function in each of `reps` rounds (the functions called in turn within a round)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - t0)
    return times


def interleaved_medians(fns: Sequence[Callable[[], Any]], reps: int) -> list[float]:
    """Median seconds of each function over `reps` interleaved rounds, after one warm-up call each."""
    for f in fns:
        f()
    return [statistics.median(t) for t in interleaved_times(fns, reps)]
