"""Engine statistics: calls and tiles per compute unit, time per phase, counters. Plain dicts out."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any


class Stats:
    """Thread-safe accumulators; `snapshot()` returns plain data for reports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._units: dict[str, dict[str, int | float]] = defaultdict(
                lambda: {"calls": 0, "tiles": 0, "padded_calls": 0, "busy_s": 0.0})
            self._phases: dict[str, float] = defaultdict(float)
            self._counters: dict[str, int] = defaultdict(int)

    def unit_calls(self, unit: str, calls: int, tiles: int, padded: int, seconds: float) -> None:
        if not calls:
            return
        with self._lock:
            self._unit(unit, calls, tiles, padded, seconds)

    def _unit(self, unit: str, calls: int, tiles: int, padded: int, seconds: float) -> None:
        u = self._units[unit]
        u["calls"] += calls
        u["tiles"] += tiles
        u["padded_calls"] += padded
        u["busy_s"] += seconds

    def record(self, phases: dict[str, float], counters: dict[str, int],
               unit: tuple[str, int, int, int, float] | None = None) -> None:
        """Several phase times and counters, and optionally one unit's (name, calls, tiles, padded calls,
        busy seconds), under one lock."""
        with self._lock:
            for k, v in phases.items():
                self._phases[k] += v
            for k, n in counters.items():
                self._counters[k] += n
            if unit is not None and unit[1]:
                self._unit(*unit)

    def phase(self, name: str, seconds: float) -> None:
        with self._lock:
            self._phases[name] += seconds

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            units = {k: dict(v) for k, v in sorted(self._units.items())}
            return {
                "units": units,
                "tiles_per_unit": {k: int(v["tiles"]) for k, v in units.items()},
                "phases_s": dict(sorted(self._phases.items())),
                "counters": dict(sorted(self._counters.items())),
            }


STATS = Stats()
