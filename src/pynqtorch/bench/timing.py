"""Timing for benchmarks: functions measured in turn, so machine load hits every one of them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def interleaved_medians(fns: Sequence[Callable[[], Any]], reps: int) -> list[float]:
    """Median seconds of each function over `reps` interleaved rounds, after one warm-up call each."""
    for f in fns:
        f()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]
