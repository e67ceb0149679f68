"""Checking a kernel's C simulation against the golden model on edge-case and random tiles.

Edge cases are the inputs that expose narrow accumulators and operand truncation: all -128, all 127,
-128 by 127 (the most negative sums) and alternating signs; runtime-shape kernels get them at their
largest K and N, and random trials at the smallest, largest and random multiples of the tile.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ...hw.description import Description
from ...hw.kernels import KernelInfo
from ..base import golden_gemm
from .target import CsimLibrary, CsimUnit

# Random trials stay below this many MACs so a verify run takes seconds.
_TRIAL_MACS = 1 << 22


@dataclass(frozen=True)
class Trial:
    """One kernel call compared with `golden_gemm`."""

    case: str
    m: int
    n: int
    k: int
    mismatches: int
    max_diff: int
    first: tuple[int, int, int, int] | None  # row, column, kernel value, golden value

    @property
    def ok(self) -> bool:
        return self.mismatches == 0


def _dim_choices(desc: Description, dim: str) -> list[int]:
    tile = getattr(desc.tile, dim)
    if dim not in desc.runtime_dims:
        return [tile]
    return list(range(tile, desc.dim_limit(dim) + 1, tile))


def _edge_shape(desc: Description) -> tuple[int, int, int]:
    m = _dim_choices(desc, "m")
    return m[min(3, len(m) - 1)], desc.dim_limit("n"), desc.dim_limit("k")


def _random_shapes(desc: Description, rng: np.random.Generator, count: int) -> Iterator[tuple[int, int, int]]:
    choices = {d: _dim_choices(desc, d) for d in ("m", "n", "k")}
    lo = {d: c[0] for d, c in choices.items()}
    hi = {d: c[-1] for d, c in choices.items()}
    fixed = [(lo["m"], lo["n"], lo["k"]), (lo["m"], hi["n"], hi["k"]), (hi["m"], lo["n"], lo["k"])]
    for i in range(count):
        if desc.runtime_dims and i < len(fixed):
            yield fixed[i]
            continue
        m, n, k = (int(rng.choice(choices[d])) for d in ("m", "n", "k"))
        while m * n * k > _TRIAL_MACS and m > lo["m"]:
            m = max(lo["m"], (m // 2) // lo["m"] * lo["m"])
        yield m, n, k


def _edge_inputs(m: int, n: int, k: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    def full(shape: tuple[int, int], v: int) -> np.ndarray:
        return np.full(shape, v, np.int8)

    yield "all -128", full((m, k), -128), full((k, n), -128)
    yield "all 127", full((m, k), 127), full((k, n), 127)
    yield "-128 by 127", full((m, k), -128), full((k, n), 127)
    signs_k = np.where(np.arange(k) % 2, -128, 127).astype(np.int8)
    yield ("alternating signs", np.ascontiguousarray(np.broadcast_to(signs_k, (m, k))),
           np.ascontiguousarray(np.broadcast_to(signs_k[:, None], (k, n))))


def compare(case: str, k: int, got: np.ndarray, want: np.ndarray) -> Trial:
    """A `Trial` from kernel and golden m×n results of a call with inner dim `k`."""
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    bad = np.argwhere(diff != 0)
    first = None
    if len(bad):
        i, j = (int(x) for x in bad[0])
        first = (i, j, int(got[i, j]), int(want[i, j]))
    m, n = got.shape
    return Trial(case, m, n, k, len(bad), int(diff.max(initial=0)), first)


def run_trials(info: KernelInfo, trials: int = 8, seed: int = 0) -> list[Trial]:
    """Build the kernel's C simulation and compare it with the golden model on edge and random inputs."""
    if trials < 0:
        raise ValueError(f"trials={trials} must not be negative")
    desc = info.desc
    unit = CsimUnit(f"verify:{desc.name}", CsimLibrary(info))
    rng = np.random.default_rng(seed)
    inputs: list[tuple[str, np.ndarray, np.ndarray]] = list(_edge_inputs(*_edge_shape(desc)))
    for m, n, k in _random_shapes(desc, rng, trials):
        inputs.append(("random", rng.integers(-128, 128, (m, k), dtype=np.int8),
                       rng.integers(-128, 128, (k, n), dtype=np.int8)))
    results = []
    for case, a, b in inputs:
        results.append(compare(case, a.shape[1], unit.run(a, b), golden_gemm(a, b, desc.arith)))
    return results


def folder_warnings(info: KernelInfo) -> list[str]:
    """Inconsistencies between description.json and the folder's testbench and Vitis HLS config."""
    desc, folder = info.desc, info.folder
    out = []
    if desc.testbench and not (folder / desc.testbench).is_file():
        out.append(f"{folder / 'description.json'}: field 'testbench': {desc.testbench} does not exist")
    cfg_path = folder / desc.hls.config
    if not cfg_path.is_file():
        return out + [f"{cfg_path}: missing (Vitis HLS config named by field 'hls.config')"]
    cfg = configparser.ConfigParser(strict=False)
    try:
        cfg.read_string("[top]\n" + cfg_path.read_text())
    except configparser.Error as e:
        return out + [f"{cfg_path}: cannot parse ({e.message.splitlines()[0]})"]
    hls = cfg["hls"] if cfg.has_section("hls") else {}
    expect = {"syn.top": desc.top, "tb.file": desc.testbench}
    for key, want in expect.items():
        if want and hls.get(key) != want:
            out.append(f"{cfg_path}: {key} is {hls.get(key)!r}, description.json says {want!r}")
    part = cfg["top"].get("part")
    if part != desc.hls.part:
        out.append(f"{cfg_path}: part is {part!r}, description.json field 'hls.part' says {desc.hls.part!r}")
    return out
