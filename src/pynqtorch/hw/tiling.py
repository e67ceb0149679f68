"""Cutting a GEMM dimension into kernel calls: the one tiler shared by the engine's scheduler and the cycle
model (`hw.perf`).

A dimension of size `total` is cut into blocks of the largest multiple of the kernel tile that a call takes
(`limit`); only the block at the far edge is shorter, and its call is rounded up to the tile (zero padding).
A batch of small products (a grouped convolution's groups) shares calls as diagonal blocks (`pack_factor`).
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


def pack_factor(batch: int, n: int, k: int, tile_n: int, tile_k: int, limit_n: int, limit_k: int) -> int:
    """How many ``[m, k] @ [k, n]`` products of a batch share one call as diagonal blocks (A blocks along K,
    B blocks on the diagonal of ``[p*k, p*n]``): the most that fit the call limits without costing more
    kernel tiles than running them apart (1: no packing)."""
    apart = -(-n // tile_n) * -(-k // tile_k)
    best = 1
    for p in range(2, min(batch, limit_n // n, limit_k // k) + 1):
        if -(-p * n // tile_n) * -(-p * k // tile_k) <= p * apart:
            best = p
    return best
