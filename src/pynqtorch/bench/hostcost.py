"""Host cost of board calls: measured against the virtual board, modelled for the Cortex-A9.

A board call spends host time in four stages (`targets/board/unit.py`): prepare (pack A and B into words),
transfer (copy into pynq buffers, flush), wait (registers, ap_start, polling for ap_done) and collect
(invalidate, unpack). `measure_virtual` times calls of given shapes on one unit of the board target against
an in-process virtual PYNQ-Z2: the packing alone, and the whole call, where every buffer write, flush and
register access is a gRPC round trip and the kernel is C-simulated (an upper bound of the PC-side cost, not
the board's).

The board's own host (pynq on the Zynq's ARM cores, buffers in local CMA memory) is modelled by
`hw.perf.HostModel` (`BOARD_HOST`), which the cycle-model predictions add for every call.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np


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
