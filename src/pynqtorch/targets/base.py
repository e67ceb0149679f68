"""What every target offers the engine: compute units that run one kernel call, golden arithmetic in the base.

A *target* (`ref`, `csim`, `board`, `null`) binds one kernel description and exposes one or more
*compute units*. A compute unit runs exactly one kernel call: an ``m×k`` int8 tile of A times a ``k×n``
int8 tile of B, giving the ``m×n`` accumulator the hardware would produce. Tile shapes passed in always
satisfy the description (fixed dims equal the tile, runtime dims are multiples of it up to ``max``); the
engine pads edge tiles. Targets differ only in *how* that call is run; *what* it computes is defined once
here by `golden_gemm`, the bit-exact model of the kernel's arithmetic.
"""

from __future__ import annotations

import abc
import functools
import itertools
import threading
from collections.abc import Callable

import numpy as np
import torch

from ..hw.description import Arith, Description, Tile
from ..hw.kernels import KernelInfo


def description_of(kernel: Description | KernelInfo) -> Description:
    """The description of a kernel given as a description or a found kernel folder."""
    return kernel.desc if isinstance(kernel, KernelInfo) else kernel


class TargetUnavailable(RuntimeError):
    """The target cannot run here; the message says why and what to install or set."""


def wrap_signed(x: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap of int64 values to `bits` bits (the hardware accumulator)."""
    if bits >= 64:
        return x
    mod = np.int64(1) << bits
    half = np.int64(1) << (bits - 1)
    return ((x + half) & (mod - 1)) - half


def _abs_bound(x: np.ndarray) -> int:
    """An upper bound on |x| (exact for small integer dtypes without a data pass)."""
    if x.size == 0:
        return 0
    if x.dtype == np.int8:
        return 128
    return max(-int(x.min()), int(x.max()))


def _row_major(t: torch.Tensor) -> torch.Tensor:
    """`t` contiguous with row-major strides: numpy and torch call an array contiguous whatever the strides
    of its size-1 dims, and `torch._int_mm` reads those strides as leading dimensions (a ``[1, N]`` operand
    with strides ``(1, 1)`` gives wrong sums)."""
    t = t.contiguous()
    if t.dim() == 2 and t.stride(1) == 1 and t.stride(0) == t.shape[1]:  # the common case, checked quickly
        return t
    canonical, step = [], 1
    for size in reversed(t.shape):
        canonical.append(step)
        step *= size
    canonical.reverse()
    return t if t.stride() == tuple(canonical) else t.as_strided(t.shape, canonical)


def _tensor(x: np.ndarray) -> torch.Tensor:
    """A torch tensor over `x` (copied only when needed) with row-major strides (`_row_major`)."""
    x = np.ascontiguousarray(x)
    return _row_major(torch.from_numpy(x if x.flags.writeable else x.copy()))


def _blas(a: np.ndarray, b: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """``a @ b`` in float `dtype` through torch's BLAS, returned as int64 (callers prove it is exact)."""
    return torch.mm(_tensor(a).to(dtype), _tensor(b).to(dtype)).to(torch.int64).numpy()


def _int8_blas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` of int8 matrices with int32 accumulation (`torch._int_mm`), returned as int32."""
    return torch._int_mm(_tensor(a), _tensor(b)).numpy()


@functools.cache
def int8_gemm_exact() -> bool:
    """Whether `torch._int_mm` gives exact int32 results on this machine (checked once).

    Integer GEMM kernels without dot-product instructions may saturate 16-bit pair sums; the check runs
    saturation-prone patterns (all extremes, random ±127/-128) on row, column and blocked shapes against
    int64 numpy. Any mismatch or error keeps the float BLAS path.
    """
    rng = np.random.default_rng(0)

    def extremes(g: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        return g.choice(np.array([-128, 127], np.int8), shape)

    try:
        for m, k, n in itertools.product((1, 5, 64), (1, 8, 130, 1030), (1, 7, 64)):
            for va, vb in ((-128, -128), (127, -128), (-128, 127), (127, 127), (None, None)):
                a = extremes(rng, (m, k)) if va is None else np.full((m, k), va, np.int8)
                b = extremes(rng, (k, n)) if vb is None else np.full((k, n), vb, np.int8)
                if not np.array_equal(_int8_blas(a, b), a.astype(np.int64) @ b.astype(np.int64)):
                    return False
    except Exception:  # noqa: BLE001 - any failure just disables the integer path
        return False
    return True


_FLOAT_PATHS: list[tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], int]] = [
    (functools.partial(_blas, dtype=torch.float32), 1 << 24),
    (functools.partial(_blas, dtype=torch.float64), 1 << 53)]


def _exact_int_gemm(a: np.ndarray, b: np.ndarray, narrow: bool = False) -> np.ndarray:
    """Exact int64 product of signed integer matrices (modulo 2**64 if it does not fit); int32 instead
    when `narrow` and the product came from the int32-accumulating integer GEMM in one piece.

    int8 operands use an integer GEMM with int32 accumulation when `int8_gemm_exact()` (exact while
    ``k * 2**14 < 2**31``). Otherwise a float dot product of integers is exact while every partial sum is
    an integer the format holds: ``|partial sum| <= k * max|a| * max|b| <= 2**24`` (float32) or ``2**53``
    (float64), whatever the summation order. K is cut into chunks meeting the bound (1024 for int8 in
    float32) and chunk results are summed in int64. Operands too wide for float64 go through numpy's
    integer matmul (exact modulo 2**64).
    """
    m, k = a.shape
    n = b.shape[1]
    bound = max(_abs_bound(a) * _abs_bound(b), 1)
    int8 = a.dtype == np.int8 and b.dtype == np.int8 and a.size and b.size and int8_gemm_exact()
    if int8 and k * bound < 1 << 31:
        out = _int8_blas(a, b)
        return out if narrow else out.astype(np.int64)
    paths = ([(_int8_blas, (1 << 31) - 1)] if int8 else []) + _FLOAT_PATHS
    for fn, limit in paths:
        chunk = limit // bound
        if chunk >= k:
            return fn(a, b).astype(np.int64, copy=False)
        if chunk >= 64:
            out = np.zeros((m, n), np.int64)
            for k0 in range(0, k, chunk):
                out += fn(a[:, k0:k0 + chunk], b[k0:k0 + chunk])
            return out
    return a.astype(np.int64) @ b.astype(np.int64)


def golden_gemm(a: np.ndarray, b: np.ndarray, arith: Arith, *, narrow: bool = False) -> np.ndarray:
    """Bit-exact model of one kernel call: ``a @ b`` with the kernel's accumulator width and overflow rule.

    Returns int64 holding the accumulator value (already wrapped or saturated to ``arith.acc_bits``);
    `narrow` lets an accumulator of at most 32 bits come back as int32 when that saves the widening copy
    (the values are the same).
    Saturation is applied after every multiply-accumulate in increasing k, as a sequential HLS loop does.
    When ``k * max|a| * max|b|`` fits the accumulator neither rule can trigger and the exact product is
    returned as is.
    """
    hi = (1 << (arith.acc_bits - 1)) - 1
    lo = -(1 << (arith.acc_bits - 1))
    if a.shape[1] * _abs_bound(a) * _abs_bound(b) <= hi:
        return _exact_int_gemm(a, b, narrow and arith.acc_bits <= 32)
    if arith.overflow == "wrap":
        return wrap_signed(_exact_int_gemm(a, b), arith.acc_bits)
    acc = np.zeros((a.shape[0], b.shape[1]), np.int64)
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    for kk in range(a.shape[1]):
        acc = np.clip(acc + np.outer(a64[:, kk], b64[kk]), lo, hi)
    return acc


def golden_stack(a: torch.Tensor, b: torch.Tensor, arith: Arith) -> torch.Tensor:
    """`golden_gemm` of every pair of a stack: int8 ``a`` ``[B, m, k]`` and ``b`` ``[B, k, n]`` give the
    accumulators ``[B, m, n]`` (int32 for accumulators of at most 32 bits, else int64).

    While ``k * 128 * 128`` fits the accumulator (so neither wrap nor saturation can trigger) the products are
    exact sums: one exact integer GEMM for a single pair (`int8_gemm_exact`), one float32 batched product
    while ``k * 128 * 128 <= 2**24``; otherwise call by call.
    """
    bt, _, k = a.shape
    acc_dtype = torch.int32 if arith.acc_bits <= 32 else torch.int64
    fits = k * (1 << 14) <= (1 << (arith.acc_bits - 1)) - 1
    if fits and bt == 1 and a.dtype == b.dtype == torch.int8 and a.numel() and b.numel() and int8_gemm_exact():
        out = torch._int_mm(_row_major(a.select(0, 0)), _row_major(b.select(0, 0)))
        return (out if out.dtype == acc_dtype else out.to(acc_dtype)).unsqueeze(0)
    if fits and k * (1 << 14) <= 1 << 24:
        return torch.bmm(a.to(torch.float32), b.to(torch.float32)).to(acc_dtype)
    an, bn = a.numpy(), b.numpy()
    return torch.from_numpy(np.stack([golden_gemm(np.ascontiguousarray(an[i]), np.ascontiguousarray(bn[i]),
                                                  arith, narrow=True) for i in range(bt)]))


class ComputeUnit(abc.ABC):
    """One place a kernel call can run; several units of a target run concurrently.

    `any_shape`: the unit computes calls of any shape exactly (a model, not hardware), so the engine hands it
    edge blocks unpadded; the result equals the padded call's, cropped.
    `resident_b`: the unit keeps B tiles on its device when told a stable name for them, so the engine
    passes ``b_key`` to its `run` for tiles of cached weights (the board target).
    """

    any_shape = False
    resident_b = False
    # The unit runs a whole stack of calls at once (`run_stack`): a model, where stacking costs nothing.
    stacks = False
    # The unit's call is the golden model's exact integer product, with nothing else to it: the engine may compute
    # such a product itself in a native pass with its quantization (`engine.api.BoundGemm`) and count it as
    # one of the unit's calls (`counted`).
    exact = False

    def __init__(self, name: str, desc: Description) -> None:
        self.name = name
        self.desc = desc
        self.calls = 0
        self._lock = threading.Lock()

    def run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Run one call on C-contiguous int8 `a` (m×k) and `b` (k×n); returns the accumulator m×n as int64
        (int32 allowed when the kernel's accumulator has at most 32 bits)."""
        with self._lock:
            self.calls += 1
            return self._run(a, b)

    def counted(self, calls: int = 1) -> None:
        """Count `calls` calls computed for this unit elsewhere (units with `exact` only)."""
        with self._lock:
            self.calls += calls

    def run_stack(self, a: torch.Tensor, b: torch.Tensor, calls: int = 1) -> torch.Tensor:
        """The calls ``a[i] @ b[i]`` of int8 stacks ``[B, m, k]`` and ``[B, k, n]`` as one unit invocation, counted
        as `calls` calls (the M blocks of products cut only along M, see `Scheduler._stack`) (units with `stacks`
        only)."""
        raise NotImplementedError(f"{type(self).__name__} runs one call at a time")

    @abc.abstractmethod
    def _run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Target-specific execution of one call (inputs already validated and shaped)."""

    def close(self) -> None:
        """Release resources held by the unit (buffers, libraries)."""


class Target(abc.ABC):
    """A way to run kernel calls: declares its availability probe and priority, and builds compute units."""

    name: str = ""
    # Larger runs first when no target is named (pynq's `_probe_priority_` idea).
    priority: int = 0

    @classmethod
    @abc.abstractmethod
    def probe(cls) -> str | None:
        """None when usable here, otherwise the reason it is not."""

    @abc.abstractmethod
    def compute_units(self, kernel: Description | KernelInfo) -> list[ComputeUnit]:
        """Compute units running `kernel` on this target (a `KernelInfo` also says where its sources are)."""

    def block_units(self, kernel: KernelInfo) -> list:
        """Units running map/rows kernel `kernel` (`targets.blocks.BlockUnit`); TargetUnavailable when this
        target cannot run it."""
        raise TargetUnavailable(f"target {self.name!r} does not run {kernel.desc.op} kernels")

    def call_limits(self, desc: Description) -> Tile:
        """Largest m, n, k one call of this target's units takes: the description's, unless the target
        can do more (the golden model takes any multiple of the tile, see `targets.ref`)."""
        return Tile(m=desc.dim_limit("m"), n=desc.dim_limit("n"), k=desc.dim_limit("k"))


def dsp_pair_products(x: np.ndarray, y0: np.ndarray, y1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x*y0, x*y1)`` the way the packed kernel gets them from one DSP48E1 multiply (bit-exact model).

    The 25-bit port holds ``y1 * 2**16 + y0``; the 33-bit product p gives ``y0*x`` as its low 16 bits read
    signed, and ``y1*x`` as ``(p >> 16) + bit 15 of p`` (the borrow a negative low product takes). For int8
    operands both are exact, which `golden_gemm` relies on for kernels using the trick.
    """
    w = (y1.astype(np.int64) << 16) + y0.astype(np.int64)
    p = w * x.astype(np.int64)
    lo = ((p & 0xFFFF) ^ 0x8000) - 0x8000
    hi = (p >> 16) + ((p >> 15) & 1)
    return lo, hi
