"""Checking a map/rows kernel's C simulation against torch's op within the description's tolerance.

Inputs (documented in the description's ``verify`` section): uniform random values over ``verify.range`` at
the smallest, an odd and the largest call sizes, and an evenly spaced sweep of the range in the largest call; every value of ``verify.extremes`` (large magnitudes,
zeros) filling a block and mixed into random data; and, when ``verify.nonfinite`` is ``propagate``, NaN, +Inf
and -Inf mixed into random data, whose results must be non-finite exactly where torch's are (NaN and ±Inf
count alike: torch's own CPU kernels give NaN for some limits, e.g. ``gelu(+Inf)``, and Inf for others). Per
case and output: max absolute and relative error, ULP distance (max and mean, finite elements) and the
elements out of tolerance.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ...hw.blocks import max_sizes
from ...hw.families import BlockDescription
from ...hw.kernels import KernelInfo
from ..blocks import Arrays, reference
from .blocks import BlockLibrary, CsimBlockUnit


@dataclass(frozen=True)
class BlockTrial:
    """One kernel call compared with torch's op on one output."""

    case: str
    op: str
    sizes: str
    output: str
    elements: int
    failures: int
    max_abs: float
    max_rel: float
    max_ulp: int
    mean_ulp: float
    first: tuple[int, float, float, float] | None  # flat index, input x there (or row's first), kernel, torch

    @property
    def ok(self) -> bool:
        return self.failures == 0


def _ordered(x: np.ndarray) -> np.ndarray:
    """float32 bits mapped to integers in the floats' order (adjacent floats differ by 1; -0 == +0)."""
    i = x.astype(np.float32).view(np.int32).astype(np.int64)
    return np.where(i < 0, -(i & 0x7FFF_FFFF), i)


def compare(desc: BlockDescription, case: str, op: str, sizes: dict[str, int], role: str, x: np.ndarray,
            got: np.ndarray, want: np.ndarray) -> BlockTrial:
    """A `BlockTrial` from kernel and torch values of output `role` (x: the call's input, for the report)."""
    g, w = got.reshape(-1).astype(np.float64), want.reshape(-1).astype(np.float64)
    tol = desc.verify.tolerance
    finite = np.isfinite(w) & np.isfinite(g)
    diff = np.abs(np.where(finite, g, 0.0) - np.where(finite, w, 0.0))
    ok = np.where(np.isfinite(w), finite & (diff <= tol.abs + tol.rel * np.abs(w)), ~np.isfinite(g))
    rel = np.where(finite & (w != 0), diff / np.where(w == 0, 1, np.abs(w)), 0.0)
    ulp = np.abs(_ordered(got.reshape(-1)) - _ordered(want.reshape(-1)))[finite]
    bad = np.flatnonzero(~ok)
    first = None
    if bad.size:
        i = int(bad[0])
        xi = x.reshape(-1)[i] if x.size == g.size else x.reshape(g.size, -1)[i, 0]
        first = (i, float(xi), float(g[i]), float(w[i]))
    return BlockTrial(case, op, " ".join(f"{k}={v}" for k, v in sizes.items()), role, int(g.size), int(bad.size),
                      float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), int(ulp.max(initial=0)),
                      float(ulp.mean()) if ulp.size else 0.0, first)


def _shapes(desc: BlockDescription) -> list[tuple[int, ...]]:
    top = max_sizes(desc)
    if desc.op == "map":
        return [(1,), (min(77, top["n"]),), (top["n"],)]
    r, c = top["rows"], top["cols"]
    return [(1, 1), (min(5, r), min(77, c)), (r, c)]


def _inputs(desc: BlockDescription, rng: np.random.Generator) -> Iterator[tuple[str, Arrays]]:
    lo, hi = desc.verify.range
    inputs = ("x", "y") if "y" in desc.roles else ("x",)

    def uniform(shape: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(lo, hi, shape).astype(np.float32)

    def mixed(shape: tuple[int, ...], values: list[float]) -> np.ndarray:
        x = uniform(shape).reshape(-1)
        pos = rng.choice(x.size, min(len(values) * 3, x.size), replace=False)
        x[pos] = np.resize(np.array(values, np.float32), pos.size)
        return x.reshape(shape)

    for shape in _shapes(desc):
        yield f"uniform [{lo:g}, {hi:g}]", {r: uniform(shape) for r in inputs}
    top = _shapes(desc)[-1]
    sweep = np.linspace(lo, hi, int(np.prod(top)), dtype=np.float32).reshape(top)
    yield f"sweep [{lo:g}, {hi:g}]", {r: sweep if r == "x" else uniform(top) for r in inputs}
    mid = _shapes(desc)[1]
    for v in desc.verify.extremes:
        yield f"all {v:g}", {r: np.full(mid, v, np.float32) for r in inputs}
    if desc.verify.extremes:
        yield "extremes mixed in", {r: mixed(mid, desc.verify.extremes) for r in inputs}
    if desc.verify.nonfinite == "propagate":
        for name, v in (("NaN", np.nan), ("+Inf", np.inf), ("-Inf", -np.inf)):
            yield f"{name} mixed in", {"x": mixed(mid, [v]), **{r: uniform(mid) for r in inputs[1:]}}


def _call(desc: BlockDescription, data: Arrays, rng: np.random.Generator) -> tuple[Arrays, dict[str, float]]:
    """Complete a call's data with per-column parameters and scalars (weight, bias, eps) where it takes them."""
    cols = data["x"].shape[-1]
    if "weight" in desc.roles:
        data["weight"] = rng.uniform(-2, 2, cols).astype(np.float32)
    if "bias" in desc.roles:
        data["bias"] = rng.uniform(-1, 1, cols).astype(np.float32)
    return data, ({"eps": 1e-5} if "eps" in desc.roles else {})


def run_block_trials(info: KernelInfo, seed: int = 0) -> list[BlockTrial]:
    """Build the kernel's C simulation and compare every output with torch's op, for every declared op."""
    desc: BlockDescription = info.desc  # type: ignore[assignment]
    unit = CsimBlockUnit(f"verify:{desc.name}", BlockLibrary(info))
    rng = np.random.default_rng(seed)
    results = []
    for case, data in _inputs(desc, rng):
        data, scalars = _call(desc, data, rng)
        for op in desc.aten:
            got = unit.run(op, data, scalars)
            want = reference(desc, op, data, scalars)
            sizes = ({"n": data["x"].size} if desc.op == "map"
                     else {"rows": data["x"].shape[0], "cols": data["x"].shape[1]})
            for role in want:
                results.append(compare(desc, case, op, sizes, role, data["x"], got[role], want[role]))
    return results
