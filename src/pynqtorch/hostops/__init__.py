"""Native host passes of the engine: fused int8 quantization (of operands and of convolution patches),
dequantization, small exact GEMMs and depthwise convolutions in one pass, exact int8 products of a stack and float
products of two activations per stack entry in one pass, and the steps of recurrent layers (``hostops.cpp``).

The torch formulation in `engine.quant` takes four to six passes over an operand (|x|, max, multiply,
round, convert); the C++ here takes one or two and returns bit-identical results (same IEEE float32
operations, tested). It is compiled with the C++ compiler on first use into the build cache
(`pynqtorch.buildcache`) and loaded with ctypes, which releases the GIL during calls.

Every function returns None when it does not take a case (float64, empty operands, NaN/Inf, scales so
small that they need float64); the caller then runs the torch formulation. Large passes use the threads
of the OpenMP runtime torch itself loads. Without a compiler, or with ``PYNQTORCH_HOSTOPS=0`` (read once,
at first use), everything runs in torch.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import importlib.resources
import logging
import os
import subprocess
from pathlib import Path

import torch

from ..buildcache import cached_build, compiler, cpu_flags
from .patches import Patches

log = logging.getLogger(__name__)

ENV = "PYNQTORCH_HOSTOPS"
FLAGS = ("-O3", "-std=c++14", "-ffp-contract=off", "-fPIC", "-shared")
# Threads for large passes through the OpenMP runtime torch loads (libgomp); without it, one thread.
OPENMP = ("-fopenmp",)

_i64, _ptr, _f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
_SIGNATURES = {
    "pynqtorch_quantize_rows": ([_ptr, _i64, _i64, _i64, _i64, _i64, _f32, _ptr, _ptr], ctypes.c_int),
    "pynqtorch_quantize_cols": ([_ptr, _i64, _i64, _i64, _i64, _i64, _f32, _ptr, _ptr, _ptr], ctypes.c_int),
    "pynqtorch_quantize_tensor": ([_ptr, _i64, _i64, _i64, _i64, _i64, _f32, _ptr, _ptr], ctypes.c_int),
    "pynqtorch_im2col_quantize": ([_ptr, ctypes.POINTER(_i64), ctypes.c_int, _f32, _ptr, _ptr], ctypes.c_int),
    "pynqtorch_im2col_quantize_runs": ([_ptr, ctypes.POINTER(_i64), _f32, _ptr, _ptr], ctypes.c_int),
    "pynqtorch_im2col_quantize_padded": ([_ptr, ctypes.POINTER(_i64), _f32, _ptr, _ptr], ctypes.c_int),
    "pynqtorch_dequantize_into": ([_ptr, _i64, _i64, _i64, _ptr, _i64, _i64, _ptr, _i64, _i64, _ptr, _ptr, _i64, _i64,
                                   _i64], ctypes.c_int),
    "pynqtorch_gemm_rows": ([_ptr, _i64, _i64, _i64, ctypes.c_int, _f32, _ptr, _i64, _i64, _ptr, _i64, _ptr, _ptr, _i64,
                             _ptr], ctypes.c_int),
    "pynqtorch_rnn_vnni": ([], ctypes.c_int),
    "pynqtorch_rnn_steps": ([ctypes.c_int, _i64, _i64, ctypes.c_int, _f32, _ptr, _i64, _ptr, _ptr, _i64, _i64, _ptr, _i64,
                             _ptr, _ptr, _i64, _ptr, _ptr, _ptr, _i64, _ptr, ctypes.POINTER(ctypes.c_int)], _i64),
    "pynqtorch_rnn_cell": ([ctypes.c_int, _i64, _i64, _ptr, _ptr, _ptr, _ptr, _ptr], None),
    "pynqtorch_stack_gemm": ([_ptr, ctypes.POINTER(_i64), _f32, _ptr, ctypes.POINTER(_i64), _ptr, ctypes.POINTER(_i64),
                              _i64, _i64, _i64, _i64, _i64, _f32, ctypes.c_int], ctypes.c_int),
    "pynqtorch_stack_product": ([_ptr, ctypes.POINTER(_i64), _ptr, ctypes.POINTER(_i64), _i64, _i64, _i64, _i64,
                                 ctypes.c_int, _ptr], None),
    "pynqtorch_depthwise_conv": ([_ptr, ctypes.POINTER(_i64), _i64, _f32, _ptr, _ptr, _i64, _ptr, _ptr,
                                  ctypes.POINTER(_i64)], ctypes.c_int),
}


def source() -> Path:
    """The C++ source (shipped in the package)."""
    return Path(str(importlib.resources.files(__package__) / "hostops.cpp"))


def build() -> Path:
    """Path of the compiled library (built on first use; `BuildError` without a compiler)."""
    src = source()
    text = src.read_bytes()

    target = cpu_flags(compiler())

    def compile_(tmp: Path, cxx: str) -> None:
        for flags in ((*FLAGS, *target, *OPENMP), (*FLAGS, *target)):
            proc = subprocess.run([cxx, *flags, "-o", str(tmp / "hostops.so"), str(src)], capture_output=True,
                                  text=True, check=False)
            if proc.returncode == 0:
                return
        raise RuntimeError(f"compiling {src} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")

    parts = [text, " ".join((*FLAGS, *target, *OPENMP)).encode()]
    return cached_build("hostops", "hostops", parts, compile_) / "hostops.so"


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded library, or None (disabled by ``PYNQTORCH_HOSTOPS=0``, or no compiler: logged once)."""
    if os.environ.get(ENV, "1") == "0":
        return None
    try:
        lib = ctypes.CDLL(str(build()))
    except (RuntimeError, OSError) as e:  # BuildError (no compiler) is a RuntimeError
        log.warning("native host passes unavailable, quantizing with torch ops: %s", e)
        return None
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    return lib


def status() -> str:
    """One line for reports: where the host passes run."""
    if os.environ.get(ENV, "1") == "0":
        return f"torch ops ({ENV}=0)"
    return "native (C++)" if library() is not None else "torch ops (no C++ compiler)"


def quantize(x: torch.Tensor, dim: int, per_line: bool, qmax: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """int8 values and float32 scales of float32 `x` (``[B, R, C]``) as `engine.quant.quantize` defines
    them (lines along `dim`: -1 one scale per row, -2 per column; one scale if not `per_line`), or None."""
    lib = library()
    if lib is None or x.dtype != torch.float32 or x.numel() == 0:
        return None
    if x.stride(-1) != 1:
        if x.stride(-2) == 1:  # a transposed operand: quantize the contiguous view along the other dim
            res = quantize(x.transpose(1, 2), -3 - dim, per_line, qmax)
            return None if res is None else (res[0].transpose(1, 2), res[1].transpose(1, 2) if per_line else res[1])
        x = x.contiguous()
    nb, nr, nc = x.shape
    q = torch.empty((nb, nr, nc), dtype=torch.int8)
    args = (x.data_ptr(), nb, nr, nc, x.stride(0), x.stride(1), float(qmax), q.data_ptr())
    if not per_line:
        scale = torch.empty((), dtype=torch.float32)
        st = lib.pynqtorch_quantize_tensor(*args, scale.data_ptr())
    elif dim == -1:
        scale = torch.empty((nb, nr, 1), dtype=torch.float32)
        st = lib.pynqtorch_quantize_rows(*args, scale.data_ptr())
    else:
        scale = torch.empty((nb, 1, nc), dtype=torch.float32)
        work = torch.empty(2 * nc, dtype=torch.int32)
        st = lib.pynqtorch_quantize_cols(*args, scale.data_ptr(), work.data_ptr())
    return (q, scale) if st == 0 else None


def im2col_quantize(p: Patches, per_line: bool, qmax: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`quantize` of the matrix `p` describes (``p.materialize()``, lines along K) built from its input
    directly, or None (then quantize the materialized matrix). With one scale per row: short windows by walking
    output positions (`Patches.position_walk`), other plain convolutions with a kernel above 1x1 from zero-padded
    channels-last bands of the input built in the pass (``pynqtorch_im2col_quantize_padded``); otherwise by
    gathering rows."""
    lib = library()
    if lib is None or p.dtype not in (torch.float32, torch.float16, torch.bfloat16) or p.x.numel() == 0:
        return None
    if p.dtype != torch.float32:
        p = dataclasses.replace(p, x=p.x.float())
    groups, rows, k = p.shape
    q = torch.empty((groups, rows, k), dtype=torch.int8)
    scale = torch.empty((groups, rows, 1) if per_line else (), dtype=torch.float32)
    walk = p.position_walk() if per_line else None
    if walk is not None:
        xh, geo = walk
        st = lib.pynqtorch_im2col_quantize_runs(xh.data_ptr(), (_i64 * len(geo))(*geo), float(qmax), q.data_ptr(),
                                                scale.data_ptr())
    elif per_line and p.groups == 1 and p.kernel != (1, 1):
        xh = p.x.permute(0, 2, 3, 1)
        geo = p.geometry(xh)
        st = lib.pynqtorch_im2col_quantize_padded(xh.data_ptr(), (_i64 * len(geo))(*geo), float(qmax), q.data_ptr(),
                                                  scale.data_ptr())
    else:
        xh = p.gather_layout()
        geo = p.geometry(xh)
        st = lib.pynqtorch_im2col_quantize(xh.data_ptr(), (_i64 * len(geo))(*geo), int(per_line), float(qmax),
                                           q.data_ptr(), scale.data_ptr())
    return (q, scale) if st == 0 else None


def depthwise_conv(p: Patches, wq: torch.Tensor, sb: torch.Tensor, bias: torch.Tensor | None, channels_last: bool,
                   qmax: int) -> torch.Tensor | None:
    """The depthwise convolution `p` describes (one input channel per group) as one native pass
    (``pynqtorch_depthwise_conv``), equal bit for bit to `im2col_quantize` (per row), the exact integer product
    with `wq`, `dequantize` and ``+ bias``: the float32 result ``[N, G*m, OH, OW]``, channels-last or contiguous,
    or None (the caller takes the general path): a case the pass does not take, a non-finite or tiny window, or
    the dequantization's overflow guard tripping.

    `wq`: the weight's int8 values ``[G, kh*kw, m]`` (m output channels per group, channel ``g*m + j``), with
    ``kh*kw * qmax * max|wq| < 2**31`` (the caller's guarantee: the integer sums are int32); `sb`: float32 scales,
    one per output channel or one; `bias`: ``[G*m]``."""
    lib = library()
    n, c = p.x.shape[:2]
    g, k, mult = wq.shape
    if (lib is None or p.dtype != torch.float32 or p.x.numel() == 0 or p.groups != c or g != c
            or k != p.kernel[0] * p.kernel[1] or wq.dtype != torch.int8 or not wq.is_contiguous()
            or not _flat(sb) or sb.numel() not in (1, g * mult)
            or (bias is not None and not (_flat(bias) and bias.numel() == g * mult))):
        return None
    xh = p.gather_layout()
    geo = p.geometry(xh)
    out = torch.empty((n, g * mult, *p.out), dtype=torch.float32,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    st = lib.pynqtorch_depthwise_conv(xh.data_ptr(), (_i64 * len(geo))(*geo), mult, float(qmax), wq.data_ptr(),
                                      sb.data_ptr(), int(sb.numel() > 1), None if bias is None else bias.data_ptr(),
                                      out.data_ptr(), (_i64 * 4)(*out.stride()))
    return out if st == 0 else None


def _strides(s: torch.Tensor, line_dim: int) -> tuple[int, int]:
    """(batch, line) element strides of a scale ``[B, M, 1]`` / ``[B, 1, N]`` / 0-dim; 0 broadcasts."""
    if s.dim() == 0:
        return 0, 0
    return (s.stride(0) if s.shape[0] > 1 else 0), (s.stride(line_dim) if s.shape[line_dim] > 1 else 0)


def dequantize(acc: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor, out: torch.Tensor | None = None,
               bias: torch.Tensor | None = None) -> torch.Tensor | None:
    """``acc.to(float32) * sa * sb`` for a contiguous int32 ``[B, M, N]`` accumulator and float32 scales
    (`Quantized.scale` shapes), bit-identical to the torch ops, or None: also when float32 could overflow
    where the result is finite (`engine.quant.Scheme.dequantize`'s guard, taken on the scales in the same
    pass) or a scale is not finite. Written into `out` (float32 ``[B, M, N]``, any strides) if given, with
    ``+ bias`` (float32 ``[N]``, contiguous; torch's addition, rounded separately) if given."""
    lib = library()
    if (lib is None or acc.dtype != torch.int32 or not acc.is_contiguous() or sa.dtype != torch.float32
            or sb.dtype != torch.float32):
        return None
    nb, m, n = acc.shape
    if sa.dim() == 3 and sa.shape[0] not in (1, nb) or sb.dim() == 3 and sb.shape[0] not in (1, nb):
        return None
    if out is None:
        out = torch.empty((nb, m, n), dtype=torch.float32)
    elif out.dtype != torch.float32 or out.shape != acc.shape:
        return None
    if bias is not None and not (_flat(bias) and bias.shape == (n,)):
        return None
    st = lib.pynqtorch_dequantize_into(acc.data_ptr(), nb, m, n, sa.data_ptr(), *_strides(sa, 1), sb.data_ptr(),
                                       *_strides(sb, 2), None if bias is None else bias.data_ptr(), out.data_ptr(),
                                       *out.stride())
    return out if st == 0 else None


class RowsGemm:
    """Small float GEMMs against one quantized weight in one native pass each (``pynqtorch_gemm_rows``), and the
    steps of a recurrent layer in one native pass (`steps`): `b` holds the weight's int8 values as float32 ``[K, N]``,
    `sb` its float32 scales (N of them, or one); the weight's checks and pointers are taken once, here, and its rows
    padded with zero columns to a multiple of 16 (the product computes whole vector blocks of columns). The caller
    guarantees ``K * qmax * max|b| <= 2**24``: the product's float32 sums are then the exact integer product. On CPUs
    with AVX-512 VNNI the steps compute that product with integer dot products (the same integers; `vnni=False`
    keeps the float sums)."""

    def __init__(self, b: torch.Tensor, sb: torch.Tensor, per_line: bool, qmax: int, vnni: bool = True) -> None:
        lib = library()
        if lib is None or not (_flat(b) and _flat(sb) and b.dim() == 2 and sb.numel() in (1, b.shape[1])):
            raise ValueError("RowsGemm needs the native library, a contiguous float32 [K, N] weight and 1 or N "
                             "contiguous float32 scales")
        self._fn, self._steps = lib.pynqtorch_gemm_rows, lib.pynqtorch_rnn_steps
        self.k, self.n = b.shape
        padded = torch.nn.functional.pad(b, (0, -self.n % 16))
        self._b, self._sb = padded, sb  # kept alive for the pointers below
        self._fixed = (int(per_line), float(qmax), padded.data_ptr(), padded.shape[1], self.n, sb.data_ptr(),
                       int(sb.numel() > 1))
        self._packed: tuple[torch.Tensor, torch.Tensor] | None = None
        if vnni and lib.pynqtorch_rnn_vnni() and self.k * 255 * 127 < 1 << 31:
            self._packed = _pack_vnni(b.to(torch.int8))

    @property
    def vnni(self) -> bool:
        """Whether `steps` multiplies with AVX-512 VNNI."""
        return self._packed is not None

    def __call__(self, a: torch.Tensor, bias: torch.Tensor | None = None,
                 add: torch.Tensor | None = None) -> torch.Tensor | None:
        """`quantize` float32 `a` ``[M, K]`` per row (or per tensor), multiply, `dequantize`, then ``out += bias``
        (``[N]``) and ``out += add`` (``[M, N]``) as torch's ``add_`` does them; or None (the caller takes the
        general path): a case this pass does not take, a non-finite or tiny row, or the dequantization's overflow
        guard tripping."""
        m, k = a.shape
        if (k != self.k or m == 0 or a.dtype != torch.float32 or a.stride(1) != 1
                or (bias is not None and not _flat(bias)) or (add is not None and (
                    add.dtype != torch.float32 or add.shape != (m, self.n) or add.stride(1) != 1))):
            return None
        out = torch.empty((m, self.n), dtype=torch.float32)
        st = self._fn(a.data_ptr(), m, k, a.stride(0), *self._fixed, None if bias is None else bias.data_ptr(),
                      None if add is None else add.data_ptr(), 0 if add is None else add.stride(0), out.data_ptr())
        return out if st == 0 else None

    def steps(self, gru: bool, gx: torch.Tensor, out: torch.Tensor, first: int, count: int, step: int,
              h0: torch.Tensor, c: torch.Tensor | None, bias: torch.Tensor | None) -> int:
        """`count` steps of an LSTM (`c` its cell state ``[M, H]``, updated in place) or GRU (`gru`, `c` None) layer
        in one direction, this weight being ``W_hh^T`` (K = H, N = 4H or 3H): step ``s`` is time ``t = first + s *
        step`` (`step` 1 or -1), reads the input projection ``gx[t]`` (``[T, M, N]``, b_ih added) and the previous
        hidden state (`h0` ``[M, H]`` for the first, else the previous step's output), adds `bias` (b_hh) to the
        recurrent product and writes ``out[t]`` (``[T, M, H]``). Each step is `__call__`'s pass (for the LSTM with
        ``add=gx[t]``) followed by `ops.cells`' cell, computed natively. Returns the number of steps done: fewer
        than `count` when the next step's pass declines (nothing of that step written; the caller computes it
        another way and resumes)."""
        t_len, m, n = gx.shape
        hid = self.k
        if not (n == self.n == (3 if gru else 4) * hid and out.shape == (t_len, m, hid) and h0.shape == (m, hid)
                and (c is None) == gru and (c is None or c.shape == (m, hid)) and step in (1, -1)
                and 0 <= first < t_len and 0 <= first + (count - 1) * step < t_len
                and all(_flat(t) for t in (gx, out, h0, *((c,) if c is not None else ()),
                                           *((bias,) if bias is not None else ())))
                and (bias is None or bias.shape == (n,))):
            raise ValueError("RowsGemm.steps: operands of the wrong shape, dtype or layout")
        bv, bsum = self._packed if self._packed is not None else (None, None)
        work = torch.empty(m * (n + hid + 5), dtype=torch.float32)
        status = ctypes.c_int(0)
        per_row, qmax, b, ldb, _, sb, sbj = self._fixed
        return self._steps(int(gru), count, m, per_row, qmax, b, ldb, None if bv is None else bv.data_ptr(),
                           None if bsum is None else bsum.data_ptr(), hid, n, sb, sbj,
                           None if bias is None else bias.data_ptr(), gx.data_ptr() + first * gx.stride(0) * 4,
                           step * gx.stride(0), h0.data_ptr(), None if c is None else c.data_ptr(),
                           out.data_ptr() + first * out.stride(0) * 4, step * out.stride(0), work.data_ptr(),
                           ctypes.byref(status))


def _pack_vnni(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 ``[K, N]`` as ``pynqtorch_rnn_steps`` takes it for vpdpbusd: ``[ceil(N/16), ceil(K/4), 16, 4]`` (zero
    padded) and 128 times the column sums (int32, padded to a multiple of 16)."""
    k, n = q.shape
    k4, n16 = -(-k // 4), -(-n // 16)
    padded = torch.nn.functional.pad(q, (0, n16 * 16 - n, 0, k4 * 4 - k))
    packed = padded.view(k4, 4, n16, 16).permute(2, 0, 3, 1).contiguous()
    return packed, padded.sum(0, dtype=torch.int32).mul_(128).contiguous()


@functools.cache
def _vnni() -> bool:
    lib = library()
    return lib is not None and bool(lib.pynqtorch_rnn_vnni())


def stack_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """The exact int32 products ``a[i] @ b[i]`` of int8 stacks ``[B, M, K]`` and ``[B, K, N]`` (any strides) in one
    native pass (``pynqtorch_stack_product``: AVX-512 VNNI dot products where the CPU has them), or None: without
    the native library, other dtypes, or K so long that a sum could leave int32 (``K * 2**14 >= 2**31``)."""
    lib = library()
    if lib is None or a.dtype != torch.int8 or b.dtype != torch.int8 or a.shape[2] << 14 >= 1 << 31:
        return None
    bt, m, k = a.shape
    n = b.shape[2]
    c = torch.empty((bt, m, n), dtype=torch.int32)
    if c.numel():
        lib.pynqtorch_stack_product(a.data_ptr(), (_i64 * 3)(*a.stride()), b.data_ptr(), (_i64 * 3)(*b.stride()), bt,
                                    m, k, n, int(_vnni()), c.data_ptr())
    return c


def stack_gemm(a: torch.Tensor, b: torch.Tensor, qmax: int, *, pre: float = 1.0,
               out: torch.Tensor | None = None) -> torch.Tensor | None:
    """``(a * pre) @ b`` for float32 stacks ``[..., M, K]`` and ``[..., K, N]`` (one or two batch dims, equal) with the
    per-line scheme on both (A per row, B per column) in one native pass per entry (``pynqtorch_stack_gemm``):
    `quantize` of both, their exact integer product and `dequantize`, the same bits (``a * pre`` as torch multiplies by
    a float32 scalar); written into `out` (``[..., M, N]``, rows contiguous) if given, else a new contiguous tensor;
    or None (the caller takes those steps; `out` may be partly written): no AVX-512 VNNI, other dtypes or shapes,
    empty operands, K beyond ``2**31 / (255 * 128)``, a non-finite or tiny line, the dequantization's overflow
    guard."""
    lib = library()
    if (lib is None or not _vnni() or a.dtype != torch.float32 or b.dtype != torch.float32 or a.dim() not in (3, 4)
            or b.dim() != a.dim() or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2] or 0 in a.shape
            or 0 in b.shape):
        return None
    if a.stride(-1) != 1:
        a = a.contiguous()
    if b.stride(-2) != 1 and b.stride(-1) != 1:
        b = b.contiguous()
    shape = (*a.shape[:-1], b.shape[-1])
    if out is None:
        out = torch.empty(shape, dtype=torch.float32)
    elif out.dtype != torch.float32 or out.shape != shape or out.stride(-1) != 1:
        return None
    a4, b4, o4 = (t if t.dim() == 4 else t[None] for t in (a, b, out))
    b1, b2, m, k = a4.shape
    st = lib.pynqtorch_stack_gemm(a4.data_ptr(), (_i64 * 4)(*a4.stride()), float(pre), b4.data_ptr(),
                                  (_i64 * 4)(*b4.stride()), o4.data_ptr(), (_i64 * 4)(*o4.stride()), b1, b2, m, k,
                                  b4.shape[3], float(qmax), 1)
    return out if st == 0 else None


def rnn_cell(gru: bool, gx: torch.Tensor, gates: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None,
             h_out: torch.Tensor) -> bool:
    """One step of `ops.cells`' LSTM (`c` updated in place; `gates` include the input projection, `gx` unused) or
    GRU cell (`gx` the input projection, `gates` the recurrent product + b_hh), natively: the hidden state goes to
    `h_out`. False without the native library or for operands that are not contiguous float32 (nothing written)."""
    lib = library()
    m, n = gates.shape
    hid = h.shape[-1]
    if (lib is None or n != (3 if gru else 4) * hid or h.shape != (m, hid) or h_out.shape != (m, hid)
            or (c is None) != gru or not all(_flat(t) for t in (gx, gates, h, h_out, *((c,) if c is not None else ())))
            or gx.shape != gates.shape or (c is not None and c.shape != (m, hid))):
        return False
    lib.pynqtorch_rnn_cell(int(gru), m, hid, gx.data_ptr(), gates.data_ptr(), h.data_ptr(),
                           None if c is None else c.data_ptr(), h_out.data_ptr())
    return True


def _flat(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32 and t.is_contiguous()
