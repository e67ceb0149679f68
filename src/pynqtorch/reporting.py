"""`pynqtorch.report()`: the device's op counters combined with the engine's statistics."""

from __future__ import annotations

from . import device, engine
from .device.report import Report


def report() -> Report:
    """Which ops ran where since the last `reset_report()`, with engine statistics (tiles per unit)."""
    snap = device.report()
    snap.engine = engine.stats()
    return snap


def reset_report() -> None:
    """Zero all counters (ops and engine)."""
    device.reset_report()
    engine.reset_stats()
