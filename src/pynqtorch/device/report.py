"""Per-op accounting: which aten ops ran accelerated and which on CPU, how often and for how long.

The device only counts ops; `pynqtorch.report()` (`pynqtorch.reporting`) adds the engine's statistics.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class OpStat:
    calls: int = 0
    seconds: float = 0.0


@dataclass
class Report:
    """A snapshot of the counters; prints as a table, `to_dict()` for machine use."""

    accelerated: dict[str, OpStat] = field(default_factory=dict)
    cpu: dict[str, OpStat] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)  # filled by `pynqtorch.report()`
    # Why calls of accelerated ops went to the CPU instead: op -> reason -> calls.
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def ops(d: dict[str, OpStat]) -> dict[str, dict[str, float]]:
            return {k: {"calls": v.calls, "seconds": v.seconds} for k, v in sorted(d.items())}

        return {"accelerated": ops(self.accelerated), "cpu": ops(self.cpu), "engine": self.engine,
                "fallback_reasons": {k: dict(v) for k, v in sorted(self.reasons.items())}}

    def __rich__(self) -> Table:
        table = Table(title="pynqtorch report", show_lines=False)
        for col, justify in (("op", "left"), ("ran on", "left"), ("calls", "right"), ("total ms", "right"),
                             ("µs/call", "right")):
            table.add_column(col, justify=justify)
        for where, ops in (("zynq", self.accelerated), ("cpu fallback", self.cpu)):
            for name, s in sorted(ops.items(), key=lambda kv: -kv[1].seconds):
                table.add_row(name, where, str(s.calls), f"{s.seconds * 1e3:.3f}",
                              f"{s.seconds * 1e6 / max(s.calls, 1):.1f}")
        for name, why in sorted(self.reasons.items()):
            for reason, calls in sorted(why.items()):
                table.add_row(f"{name} on cpu: {reason}", "(reason)", str(calls), "", "")
        units = self.engine.get("units", {})
        if units:
            table.caption = (f"target {self.engine.get('target')}, kernel {self.engine.get('kernel')}; "
                             "kernel calls / tiles per compute unit: "
                             + ", ".join(f"{u}={s['calls']}/{s['tiles']}" for u, s in sorted(units.items())))
        return table

    def __str__(self) -> str:
        console = Console(width=110, file=io.StringIO())
        console.print(self)
        return console.file.getvalue()

    __repr__ = __str__


_lock = threading.Lock()
_accelerated: dict[str, OpStat] = {}
_cpu: dict[str, OpStat] = {}
_reasons: dict[str, dict[str, int]] = {}
# Counters kept elsewhere (the native CPU fallback's): reset -> {op: (calls, seconds)}, reset afterwards if asked.
_sources: list[Callable[[bool], dict[str, tuple[int, float]]]] = []


def add_source(counters: Callable[[bool], dict[str, tuple[int, float]]]) -> None:
    """Merge the CPU-fallback counters `counters(reset)` returns into every report; reset them with the report."""
    if counters not in _sources:
        _sources.append(counters)


def record(name: str, seconds: float, accelerated: bool) -> None:
    """Count one call of aten op `name`."""
    table = _accelerated if accelerated else _cpu
    with _lock:
        s = table.get(name)
        if s is None:
            s = table[name] = OpStat()
        s.calls += 1
        s.seconds += seconds


def record_reason(name: str, reason: str) -> None:
    """Count one call of accelerated op `name` that went to the CPU because of `reason`."""
    with _lock:
        why = _reasons.setdefault(name, {})
        why[reason] = why.get(reason, 0) + 1


def report() -> Report:
    """Which ops ran where since the last `reset_report()` (op counters only)."""
    with _lock:
        cpu = {k: OpStat(v.calls, v.seconds) for k, v in _cpu.items()}
        for counters in _sources:
            for name, (calls, seconds) in counters(False).items():
                s = cpu.setdefault(name, OpStat())
                s.calls += calls
                s.seconds += seconds
        return Report({k: OpStat(v.calls, v.seconds) for k, v in _accelerated.items()}, cpu,
                      reasons={k: dict(v) for k, v in _reasons.items()})


def reset_report() -> None:
    """Zero the op counters."""
    with _lock:
        _accelerated.clear()
        _cpu.clear()
        _reasons.clear()
        for counters in _sources:
            counters(True)
