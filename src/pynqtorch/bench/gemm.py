"""GEMM sweep: n×n by n×n on the zynq device vs torch on CPU, per input dtype and target.

For each size and dtype (float32, float16, int8, int32): median time on CPU and on zynq, speedup (CPU time /
zynq time), relative L2 error and max |diff| against the exact product (float64 for float inputs, int64 for
integer inputs), the share of exactly equal entries for integers, and the board time the kernel's cycle
model predicts (kernel cycles with the AXI terms plus the board target's per-call host stages, `BOARD_HOST`). Float and int32 operands are zynq tensors and the
product is ``a @ b`` on the device. int8 operands go through ``pynqtorch.engine.gemm(a, b,
out_dtype=torch.int32)``: torch's int8 @ int8 result is int8, which the engine refuses to wrap
(OverflowError); the CPU baseline for int8 is ``a.int() @ b.int()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import engine
from ..hw.perf import BOARD_HOST, gemm_perf
from ..targets import registry
from .timing import interleaved_medians

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "int8": torch.int8,
                                  "int32": torch.int32}
SIZES = (256, 512, 768, 1024)
QUICK_SIZES = (64, 128)
CLOCK_MHZ = 100.0
# int32 operands stay within ±INT32_RANGE so every exact n ≤ 1024 product fits int32 (and needs limbs).
INT32_RANGE = 1000


def operands(dtype: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two n×n CPU operands: randn for floats, the full range for int8, ±INT32_RANGE for int32."""
    g = torch.Generator().manual_seed(seed)
    dt = DTYPES[dtype]
    if dt.is_floating_point:
        return torch.randn(n, n, generator=g).to(dt), torch.randn(n, n, generator=g).to(dt)
    lo, hi = (-128, 128) if dt == torch.int8 else (-INT32_RANGE, INT32_RANGE + 1)
    return (torch.randint(lo, hi, (n, n), generator=g, dtype=dt),
            torch.randint(lo, hi, (n, n), generator=g, dtype=dt))


def path(dtype: str) -> str:
    """How the zynq side of `dtype` is computed."""
    return "engine.gemm(out_dtype=int32)" if dtype == "int8" else "zynq a @ b"


def errors(got: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> dict[str, float | None]:
    """Relative L2 error, max |diff| and exact-entry percentage (integers only) against the exact product."""
    if a.dtype.is_floating_point:
        exact = a.double() @ b.double()
        diff = got.double() - exact
        exact_pct = None
    else:
        exact = a.long() @ b.long()
        diff = (got.long() - exact).double()
        exact_pct = float((diff == 0).double().mean()) * 100
        exact = exact.double()
    norm = float(exact.norm())
    return {"l2_rel": float(diff.norm()) / norm if norm else float(diff.norm()),
            "max_abs_diff": float(diff.abs().max()), "exact_pct": exact_pct}


def measure(dtype: str, n: int, reps: int) -> dict[str, Any]:
    """One row of the sweep on the active target."""
    a, b = operands(dtype, n)
    active = registry.active()
    if dtype == "int8":
        def cpu() -> torch.Tensor:
            return a.int() @ b.int()

        def zynq() -> torch.Tensor:
            return engine.gemm(a, b, out_dtype=torch.int32)
    else:
        az, bz = a.to("zynq"), b.to("zynq")

        def cpu() -> torch.Tensor:
            return a @ b

        def zynq() -> torch.Tensor:
            return az @ bz
    engine.reset_stats()
    got = zynq().cpu()
    counters = engine.stats()["counters"]
    products = counters.get("limb_products", 1)
    t_cpu, t_zynq = interleaved_medians([cpu, zynq], reps)
    board = gemm_perf(active.desc, n, n, n, clock_mhz=CLOCK_MHZ, host=BOARD_HOST)
    return {"n": n, "dtype": dtype, "path": path(dtype), "target": active.name, "kernel": active.desc.name,
            "cpu_ms": t_cpu * 1e3, "zynq_ms": t_zynq * 1e3, "speedup": t_cpu / t_zynq,
            **errors(got, a, b), "limb_products": products, "kernel_calls": counters.get("kernel_calls", 0),
            "board_ms": board.total_s * products * 1e3, "board_kernel_ms": board.kernel_s * products * 1e3,
            "board_speedup": t_cpu / (board.total_s * products)}


def sweep(targets: Sequence[str], sizes: Sequence[int], dtypes: Sequence[str], reps: int,
          advance: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every (target, size, dtype) row; `advance(label)` is called before each."""
    rows = []
    for target in targets:
        registry.use(target)
        for n in sizes:
            for dtype in dtypes:
                if advance is not None:
                    advance(f"GEMM {n}³ {dtype} on {target}")
                rows.append(measure(dtype, n, reps))
    return rows


def run(quick: bool = False, targets: Sequence[str] = ("ref",),
        advance: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The sweep as plain data: sizes 256..1024 (``quick``: 64, 128) for every dtype of `DTYPES`."""
    sizes = QUICK_SIZES if quick else SIZES
    reps = 3 if quick else 5
    return {"threads": torch.get_num_threads(), "clock_mhz": CLOCK_MHZ, "sizes": list(sizes),
            "dtypes": list(DTYPES), "reps": reps,
            "rows": sweep(targets, sizes, list(DTYPES), reps, advance)}


def steps(quick: bool, targets: Sequence[str]) -> int:
    """Number of rows `run` measures (for a progress bar)."""
    return len(targets) * len(QUICK_SIZES if quick else SIZES) * len(DTYPES)
