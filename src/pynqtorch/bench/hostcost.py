"""Host cost of board calls: measured against the virtual board, modelled for the Cortex-A9.

A board call spends host time in four stages (`targets/board/unit.py`): prepare (pack A and B into words),
transfer (copy into pynq buffers, flush), wait (registers, ap_start, polling for ap_done) and collect
(invalidate, unpack). `measure_virtual` times calls of given shapes on one unit of the board target against
an in-process virtual PYNQ-Z2: the packing alone, and the whole call, where every buffer write, flush and
register access is a gRPC round trip and the kernel is C-simulated (an upper bound of the PC-side cost, not
the board's).

`HostCost` models the board's own host (pynq on the Zynq's ARM cores, buffers in local CMA memory): a fixed
part per call (Python of pynqtorch's prepare/collect, pynq's register writes and polls, two cache-maintenance
calls) plus a part per byte moved (packing, copies, flush/invalidate). `CORTEX_A9` holds the constants for
the PYNQ-Z2 (650 MHz Cortex-A9); they are estimates from the x86 measurement scaled by the cores' speed
(see docs/board.md), not a measurement on the board. The predicted board time of a model is the cycle model
(`hw.perf`, kernel only) plus this host term for every call.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..hw.description import Description
from ..hw.perf import gemm_perf
from ..hw.tiling import pack_factor


@dataclass(frozen=True)
class HostCost:
    """Host seconds of one kernel call on a board: `fixed_us` plus `ns_per_byte` for every byte of A (int8),
    B (int8) and the int32 result moved."""

    name: str
    fixed_us: float
    ns_per_byte: float

    def call_s(self, m: int, n: int, k: int) -> float:
        return (self.fixed_us * 1e3 + self.ns_per_byte * (m * k + k * n + 4 * m * n)) * 1e-9


# PYNQ-Z2 host (Cortex-A9 at 650 MHz, pynq 3.1, Python 3.10), per call:
# fixed: ~20 Python-level numpy/pynq operations in prepare and collect at ~10 µs each on this core (x86 runs
#   them at ~0.5-1 µs: the A9 is 10-20x slower on interpreter-bound code), ~8 MMIO register accesses at ~5 µs
#   from Python, and flush + invalidate system calls at ~25 µs each: about 300 µs;
# per byte: packing, copy into CMA buffers and cache maintenance, ~250 MB/s end to end: 4 ns/byte.
CORTEX_A9 = HostCost("PYNQ-Z2 Cortex-A9 650 MHz (modelled)", fixed_us=300.0, ns_per_byte=4.0)


def predicted_board_s(desc: Description, shapes: Sequence[tuple[int, int, int, int]], clock_mhz: float,
                      host: HostCost = CORTEX_A9) -> dict[str, float]:
    """Kernel seconds (cycle model) and host seconds (`host`) of all GEMM `shapes` ``(batch, m, n, k)`` on
    `desc`, with the engine's call splitting and packing of batches; also the number of calls."""
    kernel = host_s = 0.0
    calls = 0
    for b, m, n, k in shapes:
        g = pack_factor(b, n, k, desc.tile.n, desc.tile.k, desc.dim_limit("n"), desc.dim_limit("k"))
        if g > 1:  # the engine packs `g` products of the batch into each call (diagonal blocks)
            b, n, k = -(-b // g), g * n, g * k
        p = gemm_perf(desc, m, n, k, clock_mhz=clock_mhz)
        kernel += b * p.kernel_s
        host_s += b * sum(s.count * host.call_s(s.m, s.n, s.k) for s in p.shapes)
        calls += b * p.calls
    return {"kernel_s": kernel, "host_s": host_s, "calls": calls}


@contextlib.contextmanager
def _virtual_board(kernel: str, units: int) -> Iterator[None]:
    """An in-process virtual PYNQ-Z2 with `units` IPs of `kernel`, the board target pointed at it."""
    from ..sim.server import VirtualBoard
    from ..targets import registry
    from ..targets.board import close_board_devices
    from ..targets.board.connection import REMOTE_ENV

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "hostcost"
        folder.mkdir()
        ips = [{"instance": f"{kernel}_{i}", "kernel": kernel, "base": hex(0x4000_0000 + i * 0x1_0000),
                "range": "0x10000", "hp_port": f"HP{i % 4}"} for i in range(units)]
        (folder / "overlay.json").write_text(json.dumps(
            {"name": "hostcost", "board": "pynq-z2", "part": "xc7z020clg400-1", "bitstream": "hostcost.bit",
             "clock_mhz": 100, "ips": ips}))
        vb = VirtualBoard(str(folder)).start()
        old = os.environ.get(REMOTE_ENV)
        os.environ[REMOTE_ENV] = vb.address
        try:
            registry.use("board", kernel=kernel, overlay=str(folder))
            yield
        finally:
            registry.reset()
            close_board_devices()
            vb.stop(0)
            if old is None:
                os.environ.pop(REMOTE_ENV, None)
            else:
                os.environ[REMOTE_ENV] = old


def measure_virtual(shapes: Sequence[tuple[int, int, int]], kernel: str = "gemm_i8_packed",
                    reps: int = 5) -> list[dict[str, Any]]:
    """Median host seconds of one board call ``m×k @ k×n`` (int8, shapes the kernel takes in one call) on
    the virtual board: `prepare_s`, packing A and B into words (the unit's own packing, the part that is
    host work on the board as well), and `call_s`, the whole call (buffers, flushes, registers, the
    C-simulated kernel and reading back, each a gRPC round trip here)."""
    from ..targets import registry

    rows = []
    with _virtual_board(kernel, 1):
        unit = registry.active().units[0]
        g = np.random.default_rng(0)
        for m, n, k in shapes:
            a = g.integers(-128, 128, (m, k), dtype=np.int8)
            b = g.integers(-128, 128, (k, n), dtype=np.int8)
            unit.run(a, b)
            prep, call = [], []
            for _ in range(reps):
                t0 = time.perf_counter()
                unit._pack("a", a, m, n, k)
                unit._pack("b", b, m, n, k)
                t1 = time.perf_counter()
                unit.run(a, b)
                t2 = time.perf_counter()
                prep.append(t1 - t0)
                call.append(t2 - t1)
            rows.append({"m": m, "n": n, "k": k, "prepare_s": statistics.median(prep),
                         "call_s": statistics.median(call)})
    return rows
