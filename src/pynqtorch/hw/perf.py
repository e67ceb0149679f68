"""Predicted kernel time from a description's cycle model: one call, and a whole GEMM split into calls.

A whole ``M×K by K×N`` GEMM is split the way the engine tiles it (`hw.tiling`, the scheduler's tiler): a
fixed dim into ``ceil(D / tile)`` calls of the tile, a runtime dim into calls of ``max`` plus one remainder
call rounded up to the tile.
Board time is kernel cycles at the clock plus a host overhead per call (buffer copies, cache flushes,
register writes, polling), which the caller supplies since it depends on the host.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .description import Description
from .packing import call_dims
from .tiling import call_sizes


@dataclass(frozen=True)
class CallShape:
    """Calls of one shape within a GEMM: `count` calls of m×k by k×n, `cycles` each."""

    m: int
    n: int
    k: int
    count: int
    cycles: int


@dataclass(frozen=True)
class GemmPerf:
    """Prediction for a whole GEMM: kernel calls, cycles and time on the board."""

    m: int
    n: int
    k: int
    clock_mhz: float
    host_us: float
    shapes: tuple[CallShape, ...]

    @property
    def calls(self) -> int:
        return sum(s.count for s in self.shapes)

    @property
    def cycles(self) -> int:
        return sum(s.count * s.cycles for s in self.shapes)

    @property
    def kernel_s(self) -> float:
        return self.cycles / (self.clock_mhz * 1e6)

    @property
    def host_s(self) -> float:
        return self.calls * self.host_us * 1e-6

    @property
    def total_s(self) -> float:
        return self.kernel_s + self.host_s


def default_clock_mhz(desc: Description) -> float:
    """The kernel's target clock from ``hls.clock_ns``."""
    return 1e3 / desc.hls.clock_ns


def call_cycles(desc: Description, m: int, n: int, k: int) -> int:
    """Predicted cycles of one call of `desc` on an m×k by k×n tile (dims checked against the description)."""
    call_dims(desc, m, n, k)
    return desc.perf.predict(m, n, k)


def gemm_perf(desc: Description, m: int, n: int, k: int, clock_mhz: float | None = None,
              host_us: float = 0.0) -> GemmPerf:
    """Calls, cycles and board time for a whole m×k by k×n GEMM on kernel `desc`."""
    for d, v in (("m", m), ("n", n), ("k", k)):
        if v < 1:
            raise ValueError(f"GEMM dim {d}={v} must be at least 1")
    if host_us < 0:
        raise ValueError(f"host overhead {host_us} µs must not be negative")
    clock = default_clock_mhz(desc) if clock_mhz is None else clock_mhz
    if clock <= 0:
        raise ValueError(f"clock {clock} MHz must be positive")
    shapes = tuple(
        CallShape(cm, cn, ck, mc * nc * kc, call_cycles(desc, cm, cn, ck))
        for (cm, mc), (cn, nc), (ck, kc) in itertools.product(
            *(call_sizes(size, getattr(desc.tile, d), desc.dim_limit(d)) for d, size in (("m", m), ("n", n), ("k", k)))))
    return GemmPerf(m, n, k, clock, host_us, shapes)
