"""Cutting a GEMM dimension into kernel calls: the one tiler shared by the engine's scheduler and the cycle
model (`hw.perf`).

A dimension of size `total` is cut into blocks of the largest multiple of the kernel tile that a call takes
(`limit`); only the block at the far edge is shorter, and its call is rounded up to the tile (zero padding).
"""

from __future__ import annotations

from collections import Counter


def blocks(total: int, tile: int, limit: int) -> list[tuple[int, int, int]]:
    """(start, size, call size) of the blocks covering `total`; call sizes are tile multiples <= limit."""
    step = min(-(-total // tile) * tile, max(limit // tile, 1) * tile)
    return [(s, min(step, total - s), -(-min(step, total - s) // tile) * tile) for s in range(0, total, step)]


def call_sizes(total: int, tile: int, limit: int) -> list[tuple[int, int]]:
    """(call size, number of calls) along a dimension of `total`, largest calls first."""
    return sorted(Counter(call for _, _, call in blocks(total, tile, limit)).items(), reverse=True)
