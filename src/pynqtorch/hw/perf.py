"""Predicted kernel time from a description's cycle model: one call, and a whole GEMM split into calls.

A whole ``M×K by K×N`` GEMM is split the way the engine tiles it (`hw.tiling`, the scheduler's tiler): a
fixed dim into ``ceil(D / tile)`` calls of the tile, a runtime dim into calls of ``max`` plus one remainder
call rounded up to the tile.
Board time is kernel cycles at the clock plus host time per call: a fixed overhead the caller supplies
and/or `HostModel`, an estimate of the board target's own per-call stages (pack and copy A and B into
pynq buffers with a cache flush, registers and polling, invalidate, copy back and unpack C) on the
PYNQ-Z2's Cortex-A9. Each call's cycles come with the description's named terms (`breakdown`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from .description import Description
from .packing import call_dims, word_dtype, words_for
from .tiling import call_sizes, pack_factor


@dataclass(frozen=True)
class CallShape:
    """Calls of one shape within a GEMM: `count` calls of m×k by k×n, `cycles` each."""

    m: int
    n: int
    k: int
    count: int
    breakdown: dict[str, int]

    @property
    def cycles(self) -> int:
        return sum(self.breakdown.values())


@dataclass(frozen=True)
class HostModel:
    """Host seconds of the board target's per-call stages on the PYNQ-Z2's Cortex-A9 (650 MHz): an estimate.

    fixed_us: ~20 interpreter-bound numpy/pynq operations in prepare and collect at ~10 µs each (the A9 runs
    such code 10-20x slower than an x86 desktop), ~8 MMIO register accesses at ~5 µs from Python, and the
    flush + invalidate system calls at ~25 µs each: about 300 µs. copy_mb_s: pack and copy A and B into the
    pynq buffers including the cache flush; collect_mb_s: invalidate, copy back and widen C; both ~250 MB/s
    end to end. `bench.hostcost.measure_virtual` measures the same stages against the virtual board.
    """

    fixed_us: float = 300.0
    copy_mb_s: float = 250.0
    collect_mb_s: float = 250.0

    def call_s(self, desc: Description, m: int, n: int, k: int) -> float:
        """Host seconds of one call of m×k by k×n."""
        size = {r: words_for(desc.arg(r), m, n, k) * word_dtype(desc.arg(r)).itemsize for r in ("a", "b", "c")}
        return (self.fixed_us * 1e-6 + (size["a"] + size["b"]) / (self.copy_mb_s * 1e6)
                + size["c"] / (self.collect_mb_s * 1e6))


BOARD_HOST = HostModel()


@dataclass(frozen=True)
class GemmPerf:
    """Prediction for a whole GEMM: kernel calls, cycles and time on the board."""

    m: int
    n: int
    k: int
    clock_mhz: float
    host_us: float
    shapes: tuple[CallShape, ...]
    host_stage_s: float = 0.0  # the board target's per-call stages (`HostModel`), summed over calls

    @property
    def calls(self) -> int:
        return sum(s.count for s in self.shapes)

    @property
    def cycles(self) -> int:
        return sum(s.count * s.cycles for s in self.shapes)

    @property
    def breakdown(self) -> dict[str, int]:
        """Cycles per term of the cycle model, summed over all calls."""
        out: dict[str, int] = {}
        for s in self.shapes:
            for term, c in s.breakdown.items():
                out[term] = out.get(term, 0) + s.count * c
        return out

    @property
    def kernel_s(self) -> float:
        return self.cycles / (self.clock_mhz * 1e6)

    @property
    def host_s(self) -> float:
        return self.calls * self.host_us * 1e-6 + self.host_stage_s

    @property
    def total_s(self) -> float:
        return self.kernel_s + self.host_s


def default_clock_mhz(desc: Description) -> float:
    """The kernel's target clock from ``hls.clock_ns``."""
    return 1e3 / desc.hls.clock_ns


def call_breakdown(desc: Description, m: int, n: int, k: int) -> dict[str, int]:
    """Cycles per term of one call of `desc` on an m×k by k×n tile (dims checked against the description)."""
    call_dims(desc, m, n, k)
    return desc.perf.breakdown(m, n, k)


def call_cycles(desc: Description, m: int, n: int, k: int) -> int:
    """Predicted cycles of one call of `desc` on an m×k by k×n tile (dims checked against the description)."""
    return sum(call_breakdown(desc, m, n, k).values())


def gemm_perf(desc: Description, m: int, n: int, k: int, clock_mhz: float | None = None,
              host_us: float = 0.0, host: HostModel | None = None) -> GemmPerf:
    """Calls, cycles and board time for a whole m×k by k×n GEMM on kernel `desc` (`host`: add its stages)."""
    for d, v in (("m", m), ("n", n), ("k", k)):
        if v < 1:
            raise ValueError(f"GEMM dim {d}={v} must be at least 1")
    if host_us < 0:
        raise ValueError(f"host overhead {host_us} µs must not be negative")
    clock = default_clock_mhz(desc) if clock_mhz is None else clock_mhz
    if clock <= 0:
        raise ValueError(f"clock {clock} MHz must be positive")
    shapes = tuple(
        CallShape(cm, cn, ck, mc * nc * kc, call_breakdown(desc, cm, cn, ck))
        for (cm, mc), (cn, nc), (ck, kc) in itertools.product(
            *(call_sizes(size, getattr(desc.tile, d), desc.dim_limit(d)) for d, size in (("m", m), ("n", n), ("k", k)))))
    stages = 0.0 if host is None else sum(s.count * host.call_s(desc, s.m, s.n, s.k) for s in shapes)
    return GemmPerf(m, n, k, clock, host_us, shapes, stages)


def workload_perf(desc: Description, shapes: Sequence[tuple[int, int, int, int]], clock_mhz: float,
                  host: HostModel | None = BOARD_HOST) -> dict[str, float]:
    """Kernel seconds, host seconds (`host`'s stages) and calls of all GEMM `shapes` ``(batch, m, n, k)`` on
    `desc`, split into calls and with batches packed into shared calls the way the engine does it."""
    kernel = host_s = 0.0
    calls = 0
    for b, m, n, k in shapes:
        g = pack_factor(b, n, k, desc.tile.n, desc.tile.k, desc.dim_limit("n"), desc.dim_limit("k"))
        if g > 1:  # the engine packs `g` products of the batch into each call (diagonal blocks)
            b, n, k = -(-b // g), g * n, g * k
        p = gemm_perf(desc, m, n, k, clock_mhz=clock_mhz, host=host)
        kernel += b * p.kernel_s
        host_s += b * p.host_s
        calls += b * p.calls
    return {"kernel_s": kernel, "host_s": host_s, "calls": calls}
