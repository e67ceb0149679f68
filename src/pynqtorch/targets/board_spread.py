"""Spread large GEMMs (or a batch of them) over the compute units of every board.

Each problem is cut into kernel calls (edge tiles zero-padded), the calls are fed to all units with two in
flight per unit (so one tile is packed and transferred while the previous one runs), and the int64 partial
products over K are summed. The result is the exact product whenever no single call overflows the
kernel's accumulator (int8 operands: k per call <= 2**31 / 2**14 for a 32-bit accumulator).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..hw.description import Description
from .base import ComputeUnit
from .board import BoardTarget


def board_units(desc: Description, **options: Any) -> list[ComputeUnit]:
    """Compute units for kernel `desc` on every board (`PYNQ_REMOTE_DEVICES` order), options as `BoardTarget`'s."""
    return BoardTarget(devices="all", **options).compute_units(desc)


def _call_dim(desc: Description, dim: str, size: int) -> int:
    tile = getattr(desc.tile, dim)
    if dim not in desc.runtime_dims:
        return tile
    return min(desc.dim_limit(dim), -(-size // tile) * tile)


def spread_gemms(pairs: list[tuple[np.ndarray, np.ndarray]], units: list[ComputeUnit],
                 in_flight: int = 2) -> list[np.ndarray]:
    """``a @ b`` (int64) for each int8 pair, all calls spread over `units` (which share one kernel shape)."""
    if not units:
        raise ValueError("spread_gemms needs at least one compute unit")
    desc = units[0].desc
    jobs = []
    outs = []
    for idx, (a, b) in enumerate(pairs):
        if a.dtype != np.int8 or b.dtype != np.int8 or a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise ValueError(f"pair {idx}: need int8 matrices m×k and k×n, got {a.dtype}{a.shape} and "
                             f"{b.dtype}{b.shape}")
        m, k = a.shape
        n = b.shape[1]
        cm, cn, ck = (_call_dim(desc, d, s) for d, s in (("m", m), ("n", n), ("k", k)))
        outs.append(np.zeros((m, n), np.int64))
        for i in range(0, m, cm):
            for j in range(0, n, cn):
                for kk in range(0, k, ck):
                    jobs.append((idx, i, j, kk, cm, cn, ck))
    slots: queue.Queue[ComputeUnit] = queue.Queue()
    for _ in range(in_flight):
        for u in units:
            slots.put(u)
    locks = [threading.Lock() for _ in pairs]

    def run(job: tuple[int, ...]) -> None:
        idx, i, j, kk, cm, cn, ck = job
        a, b = pairs[idx]
        ta = np.zeros((cm, ck), np.int8)
        tb = np.zeros((ck, cn), np.int8)
        sa = a[i:i + cm, kk:kk + ck]
        sb = b[kk:kk + ck, j:j + cn]
        ta[:sa.shape[0], :sa.shape[1]] = sa
        tb[:sb.shape[0], :sb.shape[1]] = sb
        unit = slots.get()
        try:
            part = unit.run(ta, tb)
        finally:
            slots.put(unit)
        out = outs[idx]
        with locks[idx]:
            out[i:i + cm, j:j + cn] += part[:out.shape[0] - i, :out.shape[1] - j]

    with ThreadPoolExecutor(max_workers=in_flight * len(units), thread_name_prefix="spread") as pool:
        for f in [pool.submit(run, job) for job in jobs]:
            f.result()
    return outs


def spread_gemm(a: np.ndarray, b: np.ndarray, units: list[ComputeUnit]) -> np.ndarray:
    """One large int8 GEMM ``a @ b`` (int64) spread over `units`, e.g. ``board_units(desc)``."""
    return spread_gemms([(a, b)], units)[0]
