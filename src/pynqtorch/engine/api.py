"""The engine's public GEMM: ``a @ b`` on CPU tensors, computed by the active target's kernel.

Float operands are quantized (`quant`), integer operands split into exact limbs (`limbs`), the int8
products tiled over the compute units (`scheduler`), and the int64 result dequantized or range-checked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable

import torch

from .. import hostops
from ..hostops.patches import Patches
from ..targets import registry
from .limbs import Operand, call_k, check_host_sum, combine, split
from .quant import PerLine, PerTensor, QuantConfig, Scheme, resolve_config, split_k
from .scheduler import Scheduler, scheduler
from .stats import STATS
from .weights import QuantizedWeight, cached, is_current

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
SUPPORTED_DTYPES = FLOAT_DTYPES + INT_DTYPES
_INT32_MAX = (1 << 31) - 1
# Schemes whose native passes (`hostops`) define them exactly: `_fast_float` calls those passes directly.
_NATIVE_SCHEMES = (PerLine, PerTensor)
# Largest M·K·N a `BoundGemm` computes in its one native pass on exact units (larger: the unit's product, whose
# integer GEMM is faster from a few rows on).
HOST_VOLUME = 1 << 19
# Largest M·K·(N mod 16) of a product `gemm` gives the rows pass (`_host_rows`): set when the pass computed the columns
# beyond whole blocks of 16 scalar (64×512 @ 512×10: 180 against 70 µs); since `RowsGemm` pads its weight to whole
# blocks that product costs about what the units' path does (~52 against ~58 µs), and the rule stays as it was.
_HOST_TAIL = 1 << 15
_HOST_COUNTERS = {"gemm_float": 1, "limb_products": 1, "host_gemms": 1, "kernel_calls": 1}


def _dtype_name(dt: torch.dtype) -> str:
    return {torch.float32: "float", torch.float64: "double", torch.float16: "c10::Half",
            torch.bfloat16: "c10::BFloat16", torch.int8: "signed char", torch.uint8: "unsigned char",
            torch.int16: "short int", torch.int32: "int", torch.int64: "long int"}.get(dt, str(dt))


def _check(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Validate like torch.mm / torch.bmm; True for the batched form."""
    if not (a.is_cpu and b.is_cpu):
        raise ValueError(f"engine.gemm takes CPU tensors, got one on {b.device if a.is_cpu else a.device}")
    if b.dim() == 3:
        if a.dim() != 3:
            raise RuntimeError("batch1 must be a 3D tensor")
        if b.shape[0] != a.shape[0] or b.shape[1] != a.shape[2]:
            raise RuntimeError(f"Expected size for first two dimensions of batch2 tensor to be: "
                               f"[{a.shape[0]}, {a.shape[2]}] but got: [{b.shape[0]}, {b.shape[1]}].")
    elif b.dim() == 2:
        if a.dim() < 2:
            raise RuntimeError("self must be a matrix")
        if a.shape[-1] != b.shape[0]:
            rows = a.numel() // a.shape[-1] if a.shape[-1] else a.shape[:-1].numel()
            raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({rows}x{a.shape[-1]} and "
                               f"{b.shape[0]}x{b.shape[1]})")
    else:
        raise RuntimeError("mat2 must be a matrix")
    if a.dtype != b.dtype:
        raise RuntimeError(f"expected m1 and m2 to have the same dtype, but got: "
                           f"{_dtype_name(a.dtype)} != {_dtype_name(b.dtype)}")
    if a.dtype not in SUPPORTED_DTYPES:
        raise NotImplementedError(f"engine.gemm does not support {a.dtype} (supported: "
                                  f"{', '.join(str(d).removeprefix('torch.') for d in SUPPORTED_DTYPES)})")
    return b.dim() == 3


def gemm(a: torch.Tensor | Patches, b: torch.Tensor, *, weight: bool | QuantizedWeight = False, owner: object = None,
         version: Hashable | None = None, config: QuantConfig | None = None,
         out_dtype: torch.dtype | None = None, bias: torch.Tensor | None = None,
         out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b`` for CPU tensors on the active target's kernel.

    Forms: `a` ``[..., M, K]`` with `b` ``[K, N]`` gives ``[..., M, N]``; `a` ``[B, M, K]`` with `b`
    ``[B, K, N]`` gives ``[B, M, N]`` (bmm). Both operands share one dtype (float16/bfloat16/float32/float64
    or uint8/int8/int16/int32/int64); the result has it too, or `out_dtype` for integer inputs.

    Floats are quantized per `config` (default: the current `QuantConfig`); NaN/Inf lines are recomputed
    on CPU so non-finite results sit exactly where torch puts them. Integers are exact: a result that does
    not fit the result dtype raises OverflowError (nothing is truncated).

    `weight=True` marks `b` as a weight: its quantization (or limb split) is cached on `owner` (default:
    b's storage) and reused while `version` (default ``b._version``) is unchanged. A `QuantizedWeight`
    from `prepare_weight` may be passed instead (used if still current).

    `a` may be a convolution's `Patches` (``[G, R, K]``) with `b` ``[G, K, O]``, or ``[K, O]`` when G is 1
    (result ``[R, O]``): the patch matrix is then quantized from the input without being built. For one group
    (a plain convolution of a float input) the result may go into `out`, ``[N, OH*OW, O]`` in any layout (a view of
    the convolution's result), with `bias` (``[O]``) added as torch adds it (a separate rounding): written in the
    dequantization's pass when the native passes take the case; `out` is returned.

    A float product ``[M, K] @ [K, N]`` takes a `bias` too (``[N]``, its dtype), added as torch's ``add_`` adds it (a
    separate rounding): in the native pass of a small product of a cached weight (`_host_rows`) when it takes it.
    """
    if (a.requires_grad or b.requires_grad) and torch.is_grad_enabled():
        with torch.no_grad():
            return gemm(a, b, weight=weight, owner=owner, version=version, config=config, out_dtype=out_dtype,
                        bias=bias, out=out)
    if isinstance(a, Patches):
        return _patches_gemm(a, b, weight, owner, version, config, bias, out)
    if out is not None or (bias is not None and not (a.dim() == b.dim() == 2 and a.dtype.is_floating_point
                                                     and bias.dtype == a.dtype and bias.shape == b.shape[1:])):
        raise ValueError("engine.gemm takes out= with a convolution's Patches only, bias= with those or a 2-D float "
                         "product [M, K] @ [K, N] (bias [N] of its dtype)")
    batched = _check(a, b)
    if a.is_neg() or b.is_neg():  # views with the negative bit set
        a, b = a.resolve_neg(), b.resolve_neg()
    k, n = b.shape[-2], b.shape[-1]
    if batched:
        a3, b3, shape = a, b, None
    elif a.dim() == 2:  # the common case: plain indexing is the cheapest view
        a3, b3, shape = a[None], b[None], None
    else:
        a3, b3, shape = a.reshape(1, a.shape[:-1].numel(), k), b[None], (*a.shape[:-1], n)
    if a.dtype.is_floating_point:
        if out_dtype is not None and out_dtype != a.dtype:
            raise ValueError(f"out_dtype={out_dtype} is only for integer inputs (float results keep {a.dtype})")
        out = _float_gemm(a3, b3, b if weight is not False else None, weight, owner, version,
                          resolve_config(config), bias=bias)
    else:
        if out_dtype is not None and (out_dtype.is_floating_point or out_dtype.is_complex
                                      or out_dtype == torch.bool):
            raise ValueError(f"out_dtype must be an integer dtype, got {out_dtype}")
        out = _int_gemm(a3, b3, b if weight is not False else None, weight, owner, version,
                        out_dtype or a.dtype)
    if shape is not None:
        return out.reshape(shape)
    return out if batched else out[0]


def _patches_gemm(p: Patches, b: torch.Tensor, weight: bool | QuantizedWeight, owner: object,
                  version: Hashable | None, config: QuantConfig | None, bias: torch.Tensor | None,
                  out: torch.Tensor | None) -> torch.Tensor:
    g, rows, k = p.shape
    b3 = b if b.dim() == 3 else b.unsqueeze(0)
    if b3.dim() != 3 or b3.shape[0] != g or b3.shape[1] != k:
        raise RuntimeError(f"convolution patches {list(p.shape)} need a weight matrix [{g}, {k}, O]"
                           f"{f' or [{k}, O]' if g == 1 else ''}, got {list(b.shape)}")
    if out is not None or bias is not None:
        n = p.x.shape[0]
        want = (n, rows // n, b3.shape[2])
        if out is None or g != 1 or tuple(out.shape) != want or (bias is not None and tuple(bias.shape) != want[2:]):
            raise ValueError(f"engine.gemm: out= (and bias=) of a convolution take one group, out {list(want)} and "
                             f"bias [{want[2]}]; got {g} groups, out {None if out is None else list(out.shape)}, bias "
                             f"{None if bias is None else list(bias.shape)}")
    if not b.is_cpu or b.dtype != p.dtype or not p.dtype.is_floating_point:
        c = gemm(p.materialize() if b.dim() == 3 else p.materialize()[0], b, weight=weight, owner=owner,
                 version=version, config=config)  # errors and integer inputs: the general path
    else:
        c = _float_gemm(p, b3, b if weight is not False else None, weight, owner, version, resolve_config(config), out,
                        bias)
        if c is out:
            return out
        c = c if b.dim() == 3 else c[0]
    return c if out is None else _into(c, out, bias)


def _into(c: torch.Tensor, out: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A convolution's product `c` (``[R, O]`` or ``[1, R, O]``) written into its `out` with `bias`."""
    c = c.view(out.shape)
    return out.copy_(c) if bias is None else torch.add(c, bias, out=out)


def prepare_weight(b: torch.Tensor, config: QuantConfig | None = None, *, owner: object = None,
                   version: Hashable | None = None) -> QuantizedWeight:
    """The cached prepared form of weight `b` (``[K, N]`` or ``[B, K, N]``) for the active kernel."""
    if b.dim() not in (2, 3):
        raise RuntimeError("mat2 must be a matrix")
    if b.dtype not in SUPPORTED_DTYPES:
        raise NotImplementedError(f"engine.gemm does not support {b.dtype}")
    b3 = b if b.dim() == 3 else b.unsqueeze(0)
    return _weight(_kernel(), b3, b, True, owner, version,
                   resolve_config(config) if b.dtype.is_floating_point else None)


def _kernel() -> Scheduler:
    """The scheduler of the active target (it also holds the kernel's digit width and qmax)."""
    return scheduler(registry.active())


def _weight(s: Scheduler, b3: torch.Tensor, src: torch.Tensor, handle: bool | QuantizedWeight, owner: object,
            version: Hashable | None, cfg: QuantConfig | None) -> QuantizedWeight:
    d, qmax = s.digit_bits, s.qmax
    scheme = cfg.weight_scheme if cfg is not None else None
    if scheme is not None and scheme.group is not None and (reason := unsupported(cfg)) is not None:
        raise ValueError(reason)
    params = (d, qmax, scheme) if scheme is not None else (d,)
    if isinstance(handle, QuantizedWeight) and is_current(handle, src, params, owner, version):
        return handle

    def build() -> QuantizedWeight:
        t0 = time.perf_counter()
        if scheme is None:
            op = split(b3, d, "b")
            qw = QuantizedWeight(Operand(op.stacked.contiguous(), op.count, op.bound, d), None, None)
        else:
            qb = scheme.quantize(b3, -2, qmax)
            op = split(qb.q.contiguous(), d, "b", (-qmax, qmax))
            qw = QuantizedWeight(op, qb.scale, qb.bad)
        STATS.phase("weight_prepare", time.perf_counter() - t0)
        return qw

    return cached(src, params, build, owner, version)


def unsupported(config: QuantConfig | None = None) -> str | None:
    """Why the active kernel cannot run quantization `config` (default: the current one), or None.

    A grouped weight scheme needs groups of whole kernel K tiles, so that no call's K chunk spans two groups.
    """
    scheme = resolve_config(config).weight_scheme
    desc = _kernel().active.desc
    if scheme.group is not None and scheme.group % desc.tile.k:
        return (f"quantization scheme {scheme.name!r} groups K by {scheme.group}, which is not a multiple of "
                f"kernel {desc.name!r}'s K tile ({desc.tile.k}): its calls would mix groups. Use a group that "
                f"is a multiple of {desc.tile.k}, or another weight scheme")
    return None


def _product(s: Scheduler, ao: Operand, bo: Operand, m: int, n: int, k: int,
             b_key: int | None = None) -> torch.Tensor:
    """Exact ``A @ B`` from limb operands (``[B, La*M, K]`` and ``[B, K, Lb*N]``): int64, or int32 for one
    limb product whose sums over K provably fit int32; `b_key` names a cached weight B (its `serial`)."""
    desc = s.active.desc
    kc = call_k(desc.arith, desc.tile.k, s.active.limits.k, ao, bo)
    check_host_sum(k, ao, bo)
    narrow = k * ao.bound * bo.bound <= _INT32_MAX  # any sum over K of one limb product fits int32
    p = _host_stack(s, ao.stacked, bo.stacked, kc)
    if p is None:
        p = s.gemm(ao.stacked, bo.stacked, kc, b_key, narrow)
    if ao.count * bo.count == 1:
        return p
    p = p.to(torch.int64)
    t0 = time.perf_counter()
    out = combine(p, ao.count, bo.count, m, n, ao.digit_bits)
    STATS.phase("combine", time.perf_counter() - t0)
    return out


def _host_stack(s: Scheduler, a: torch.Tensor, b: torch.Tensor, k_call: int) -> torch.Tensor | None:
    """The int32 products of int8 stacks `a` ``[B, M, K]`` and `b` ``[B, K, N]`` (B > 1) that the scheduler would give
    one unit as one invocation of `golden_stack` (`Scheduler._stack`: exact units, N and K within one call), computed
    by the engine itself in one native pass (`hostops.stack_product`: the same exact sums) and accounted as those
    call(s) (counter ``host_stack_products``); None for anything else."""
    bt, m, k = a.shape
    n, lim = b.shape[2], s.active.limits
    if not (s.exact and bt > 1 and m and n and k and n <= lim.n and k <= min(lim.k, k_call)):
        return None
    t0 = time.perf_counter()
    c = hostops.stack_product(a, b)
    if c is not None:
        calls = s.stack_calls(m)
        s.host_call(m, n, k, time.perf_counter() - t0, {"kernel_calls": calls, "host_stack_products": 1}, calls=calls,
                    batch=bt)
    return c


def _direct(s: Scheduler, a_scheme: object, b_scheme: object, qw: QuantizedWeight | None) -> bool:
    """Whether the direct float path serves these schemes on `s`'s kernel, with prepared weight `qw` (None: B is
    not a weight): the built-in per-line / per-tensor schemes, one limb per operand (qmax within a digit), a
    weight without non-finite values."""
    return (type(a_scheme) in _NATIVE_SCHEMES and type(b_scheme) in _NATIVE_SCHEMES
            and s.qmax < 1 << (s.digit_bits - 1)
            and (qw is None or (qw.bad is None and qw.operand.count == 1)))


def _fast_float(s: Scheduler, a3: torch.Tensor | Patches, b3: torch.Tensor, qw: QuantizedWeight | None,
                cfg: QuantConfig, out: torch.Tensor | None = None, bias: torch.Tensor | None = None
                ) -> torch.Tensor | None:
    """`_float_gemm`'s dominant case in fewer steps, computing the same thing (the same native passes and the
    same product): float32 operands, the built-in per-line / per-tensor schemes (their native passes are
    their definition, checked bit for bit by the tests), one limb per operand (qmax within a digit), nothing
    non-finite. `qw` is the prepared weight (None: B is not a weight). None when any of that does not hold
    (a native pass declines): the general path then runs. On exact units a small product of a cached weight
    (``M·K·N <= HOST_VOLUME``, few columns beyond whole blocks of 16: `_HOST_TAIL`) is one native pass
    (`_host_rows`, as `BoundGemm` runs it). A convolution's `out` and `bias` (`_patches_gemm`) are written by the
    native dequantization when it takes them (`out` is returned then); without `out`, `bias` is added (``add_``)."""
    a_scheme = cfg.activation_scheme
    b_scheme = cfg.weight_scheme if qw is not None else a_scheme
    qmax = s.qmax
    if a3.dtype != torch.float32 or b3.dtype != torch.float32 or not _direct(s, a_scheme, b_scheme, qw):
        return None
    t0 = time.perf_counter()
    _, m, k = a3.shape
    if (qw is not None and qw.serial is not None and s.exact and not isinstance(a3, Patches) and a3.shape[0] == 1
            and 0 < m * k * b3.shape[2] <= HOST_VOLUME and m * k * (b3.shape[2] % 16) <= _HOST_TAIL
            and (rows := _host_rows(s, qw, a_scheme.per_line)) is not None):
        c = rows(a3[0], bias)  # a small product of a cached weight: one native pass (as `BoundGemm`), one unit call
        if c is not None:
            s.host_call(m, rows.n, k, time.perf_counter() - t0, _HOST_COUNTERS)
            return c[None]
    if (qw is None and out is None and not isinstance(a3, Patches)
            and (c := _stack_gemm(s, a_scheme, a3, b3)) is not None):
        return c if bias is None else c.add_(bias)  # activations on both sides: the steps below in one pass per entry
    if qw is not None:
        bo, sb, b_key = qw.operand, qw.scale, qw.serial
    else:
        qb = hostops.quantize(b3, -2, b_scheme.per_line, qmax)
        if qb is None:
            return None
        bo, sb, b_key = Operand(qb[0], 1, qmax, s.digit_bits), qb[1], None
    qa = (hostops.im2col_quantize(a3, a_scheme.per_line, qmax) if isinstance(a3, Patches)
          else hostops.quantize(a3, -1, a_scheme.per_line, qmax))
    if qa is None:
        return None
    t_quant = time.perf_counter() - t0
    acc = _product(s, Operand(qa[0], 1, qmax, s.digit_bits), bo, m, b3.shape[2], k, b_key)
    return _dequantized(acc, qa[1], sb, b_scheme, out, bias, t_quant, _FLOAT_COUNTERS)


_FLOAT_COUNTERS = {"gemm_float": 1, "limb_products": 1}


def _dequantized(acc: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor, b_scheme: Scheme, out: torch.Tensor | None,
                 bias: torch.Tensor | None, t_quant: float, counters: dict[str, int]) -> torch.Tensor:
    """The direct path's last step: accumulator `acc` with scales `sa`, `sb` as float32, by the native pass into a
    convolution's `out` with its `bias` where it takes them (`out` is returned then), else by `b_scheme`'s definition
    (``+ bias`` without `out`); the call's phases and `counters` recorded."""
    t0 = time.perf_counter()
    c = None
    if (out is not None and out.dtype == torch.float32 and acc.is_contiguous()
            and (bias is None or bias.dtype == torch.float32)):
        sa_rows = sa if sa.dim() == 0 else sa.view(*out.shape[:2], 1)  # the rows of each image
        c = hostops.dequantize(acc.view(out.shape), sa_rows, sb, out, None if bias is None else bias.contiguous())
    if c is None:
        c = b_scheme.dequantize(acc, sa, sb)
        if out is None and bias is not None:
            c.add_(bias)
    STATS.record({"quantize": t_quant, "dequantize": time.perf_counter() - t0}, counters)
    return c


def _stack_gemm(s: Scheduler, scheme: object, a: torch.Tensor, b: torch.Tensor, scale: float = 1.0,
                out: torch.Tensor | None = None) -> torch.Tensor | None:
    """``(a * scale) @ b`` of float32 activations (``[..., M, K]``, ``[..., K, N]``, one or two equal batch dims) with
    per-line `scheme` on both, as one native pass per product (`hostops.stack_gemm`: quantize, the exact integer
    product, dequantize), into `out` if given; or None: units that are not `exact`, another scheme, N or K beyond one
    call (K within the accumulator's bound too), or a case the pass declines. Accounted as the stack call(s) the
    scheduler makes of such a product on these units (`Scheduler._stack`: one, or one per M block)."""
    m, k = a.shape[-2:]
    n, lim, desc = b.shape[-1], s.active.limits, s.active.desc
    if not (s.exact and type(scheme) is PerLine and s.qmax < 1 << (s.digit_bits - 1) and n <= lim.n):
        return None
    one = Operand(torch.empty(0, dtype=torch.int8), 1, s.qmax, s.digit_bits)  # the bound of either operand: qmax
    if k > call_k(desc.arith, desc.tile.k, lim.k, one, one):
        return None
    t0 = time.perf_counter()
    c = hostops.stack_gemm(a, b, s.qmax, pre=scale, out=out)
    if c is None:
        return None
    calls = s.stack_calls(m)
    s.host_call(m, n, k, time.perf_counter() - t0, {**_HOST_COUNTERS, "kernel_calls": calls}, calls=calls,
                batch=a.shape[:-2].numel())
    return c


def activation_gemm(a: torch.Tensor, b: torch.Tensor, *, scale: float = 1.0, out: torch.Tensor | None = None,
                    config: QuantConfig | None = None) -> torch.Tensor | None:
    """``(a * scale) @ b`` of two float32 CPU activations ``[..., M, K]`` and ``[..., K, N]`` (one or two equal batch
    dims: attention's ``q @ kᵀ`` and ``p @ v`` per head), with the activation scheme on both, as `gemm` computes
    ``gemm(a * scale, b)`` bit for bit (``a * scale`` as torch multiplies by a float32 scalar), into `out` (``[..., M,
    N]``, rows contiguous) if given — or None, and the caller does exactly that (`out` may be partly written).

    Taken when every unit's call is the exact integer product (`ComputeUnit.exact`, the `ref` golden model), the
    activation scheme is per row and the native pass takes the operands (AVX-512 VNNI, finite lines, N and K within
    one call): one pass per product reading each operand in place, whatever its batch strides."""
    if (a.requires_grad or b.requires_grad) and torch.is_grad_enabled():
        return None
    if not (a.is_cpu and b.is_cpu):
        raise ValueError("engine.activation_gemm takes CPU tensors")
    return _stack_gemm(_kernel(), resolve_config(config).activation_scheme, a, b, scale, out)


def _host_rows(s: Scheduler, qw: QuantizedWeight, per_line: bool) -> hostops.RowsGemm | None:
    """The one-pass native form (`hostops.RowsGemm`) of prepared weight `qw` (one limb, ``[1, K, N]``) on `s`'s units
    for activations quantized per row (`per_line`) or per tensor; None where it is not the golden model's product:
    units that are not `exact`, a weight past `HOST_VOLUME` or one call's K, or sums that float32 could not hold
    exactly (every partial sum must be an integer below 2**24, and the golden model's sum is the exact one while it
    fits the accumulator: one call, nothing wraps or saturates). Decided and made once per scheduler, weight and
    activation quantization (`Scheduler.derived`: an entry dies with its weight's cache entry); None without the
    native library."""
    if hostops.library() is None:
        return None
    try:
        return s.derived[qw][per_line]
    except KeyError:
        pass
    bo = qw.operand
    _, k, n = bo.stacked.shape
    rows = None
    if (s.exact and k * n <= HOST_VOLUME and k <= s.active.limits.k and qw.scale.numel() in (1, n)
            and k * s.qmax * bo.bound <= min(1 << 24, (1 << (s.active.desc.arith.acc_bits - 1)) - 1)):
        rows = hostops.RowsGemm(bo.stacked[0].float(), qw.scale.reshape(-1).contiguous(), per_line, s.qmax)
    with _ROWS_LOCK:
        s.derived.setdefault(qw, {})[per_line] = rows
    return rows


class BoundGemm:
    """``a @ b (+ bias) (+ add)`` for one weight `b` (``[K, N]``) called many times with small 2-D `a` (a recurrent
    layer's steps), from `bind`.

    The weight is looked up once, here: the caller guarantees that `b` does not change while the bound GEMM is in
    use. Calls whose operands `_fast_float` takes run its direct path with everything that depends on B alone
    (scheme checks, K per call, the int32 bound) decided once: a native quantization of `a`, the scheduler's
    product and the native dequantization — the same operations, so the same bits, as `gemm`. When every unit's
    call is the exact integer product (`ComputeUnit.exact`, the `ref` golden model) and the product is small
    (``M·K·N <= HOST_VOLUME``), those three and the additions are one native pass (`hostops.RowsGemm`),
    accounted as one call of a unit. Any other call (non-float32 `a`, a declined native pass, a weight the direct
    path does not take) is `gemm`.
    """

    def __init__(self, b: torch.Tensor, owner: object, version: Hashable | None, config: QuantConfig | None) -> None:
        self._b, self._owner, self._version, self._config = b, owner, version, config
        cfg = resolve_config(config) if b.dtype.is_floating_point else None
        self._direct = self._host = False
        if cfg is None or b.dim() != 2 or not b.is_cpu:
            return
        s = _kernel()
        qw = _weight(s, b[None], b, True, owner, version, cfg)
        a_scheme, b_scheme, qmax = cfg.activation_scheme, cfg.weight_scheme, s.qmax
        if b.dtype != torch.float32 or not _direct(s, a_scheme, b_scheme, qw):
            return
        k = b.shape[0]
        self._kc, self._narrow = _weight_calls(s, qw, k)
        self._s, self._qw, self._k, self._qmax = s, qw, k, qmax
        self._per_line, self._dequantize = a_scheme.per_line, b_scheme.dequantize
        self._direct = True
        self._rows = _host_rows(s, qw, a_scheme.per_line)
        self._host = self._rows is not None

    def steps(self, gru: bool, gx: torch.Tensor, out: torch.Tensor, first: int, count: int, step: int,
              h0: torch.Tensor, c: torch.Tensor | None, bias: torch.Tensor | None) -> int:
        """Steps of a recurrent layer whose recurrent weight is this one, product and cell in one native pass
        (`hostops.RowsGemm.steps`, the arguments are its), each step's product accounted as one unit call; the
        number of steps done: 0 where this GEMM has no native pass (not exact units, or without VNNI a product
        above ``HOST_VOLUME``), fewer than `count` when a step's pass declines (the caller computes that step with
        `__call__` and `ops.cells` and resumes)."""
        m = gx.shape[1]
        if not self._host or gx.dtype != torch.float32 or not (
                self._rows.vnni or m * self._k * self._rows.n <= HOST_VOLUME):
            return 0
        t0 = time.perf_counter()
        done = self._rows.steps(gru, gx, out, first, count, step, h0, c, bias)
        if done:
            self._s.host_call(m, self._rows.n, self._k, time.perf_counter() - t0,
                              {name: done for name in _HOST_COUNTERS}, calls=done)
        return done

    def __call__(self, a: torch.Tensor, bias: torch.Tensor | None = None,
                 add: torch.Tensor | None = None) -> torch.Tensor:
        """``a @ b`` for CPU `a` ``[M, K]``, then ``.add_(bias)`` and ``.add_(add)`` if given (float32 ``[N]`` and
        ``[M, N]``)."""
        if (self._direct and a.dtype == torch.float32 and a.dim() == 2 and a.shape[1] == self._k and a.is_cpu
                and not (a.requires_grad and torch.is_grad_enabled())):
            t0 = time.perf_counter()
            if self._host and a.shape[0] * self._k * self._rows.n <= HOST_VOLUME:
                c = self._rows(a, bias, add)
                if c is not None:
                    self._s.host_call(a.shape[0], self._rows.n, self._k, time.perf_counter() - t0, _HOST_COUNTERS)
                    return c
            qa = hostops.quantize(a[None], -1, self._per_line, self._qmax)
            if qa is not None:
                t_quant = time.perf_counter() - t0
                qw = self._qw
                acc = self._s.gemm(qa[0], qw.operand.stacked, self._kc, qw.serial, self._narrow)
                t0 = time.perf_counter()
                c = self._dequantize(acc, qa[1], qw.scale)
                STATS.record({"quantize": t_quant, "dequantize": time.perf_counter() - t0},
                             {"gemm_float": 1, "limb_products": 1})
                return _added(c[0], bias, add)
        c = gemm(a, self._b, weight=True, owner=self._owner, version=self._version, config=self._config)
        return _added(c, bias, add)


_ROWS_LOCK = threading.Lock()  # writes of `Scheduler.derived`


def _weight_calls(s: Scheduler, qw: QuantizedWeight, k: int) -> tuple[int, bool]:
    """K per call of products of one-limb prepared weight `qw` (K `k`) with one-limb activations (bound qmax) on `s`'s
    kernel, and whether their sums over K fit int32 (the int64 host sum checked), as `_product` decides them."""
    ao = Operand(torch.empty(0, dtype=torch.int8), 1, s.qmax, s.digit_bits)  # the bound of every A: qmax
    desc = s.active.desc
    kc = call_k(desc.arith, desc.tile.k, s.active.limits.k, ao, qw.operand)
    check_host_sum(k, ao, qw.operand)
    return kc, k * ao.bound * qw.operand.bound <= _INT32_MAX


def _added(c: torch.Tensor, bias: torch.Tensor | None, add: torch.Tensor | None) -> torch.Tensor:
    if bias is not None:
        c.add_(bias)
    if add is not None:
        c.add_(add)
    return c


def bind(b: torch.Tensor, *, owner: object = None, version: Hashable | None = None,
         config: QuantConfig | None = None) -> BoundGemm:
    """``a -> a @ b`` for weight `b` (``[K, N]``), unchanged while the result is used: `BoundGemm`."""
    return BoundGemm(b, owner, version, config)


def depthwise_conv(p: Patches, b: torch.Tensor, bias: torch.Tensor | None, channels_last: bool, *, owner: object,
                   version: Hashable | None, config: QuantConfig | None = None) -> torch.Tensor | None:
    """A depthwise convolution (`p`: one input channel per group) with weight `b`, as the convolution lowering
    computes it from ``gemm(p, b, weight=True, owner=owner, version=version)``: the product ``[G, N*OH*OW, m]``
    laid out as ``[N, G*m, OH, OW]`` (channel ``g*m + j``; channels-last or contiguous) plus `bias` — or None, and
    the caller does exactly that.

    When every unit's call is the exact integer product (`ComputeUnit.exact`, the `ref` golden model) and
    `_fast_float`'s conditions hold (float32, the built-in schemes with per-row activations, a one-limb weight
    without non-finite values), quantization, product, dequantization, bias and layout are one native pass
    (`hostops.depthwise_conv`) that reads every window once and builds no patch matrix: the same operations, so
    the same bits. It is accounted as one call of a unit computing the G products (as the golden model takes a
    stack of them). None for anything else, including non-finite or tiny windows and the dequantization's
    overflow guard (the pass declines; its work is lost).
    """
    if (p.requires_grad or b.requires_grad) and torch.is_grad_enabled():
        with torch.no_grad():
            return depthwise_conv(p, b, bias, channels_last, owner=owner, version=version, config=config)
    s = _kernel()
    if not s.exact or p.dtype != torch.float32 or b.dtype != torch.float32 or owner is None:
        return None
    cfg = resolve_config(config)
    a_scheme = cfg.activation_scheme
    if type(a_scheme) is not PerLine:
        return None
    b3 = b if b.dim() == 3 else b[None]
    qw = _weight(s, b3, b, True, owner, version, cfg)
    g, k, m = b3.shape
    if not _direct(s, a_scheme, cfg.weight_scheme, qw) or k * s.qmax * qw.operand.bound > _INT32_MAX:
        return None
    t0 = time.perf_counter()
    out = hostops.depthwise_conv(p, qw.operand.stacked, qw.scale, bias, channels_last, s.qmax)
    if out is not None:
        s.host_call(p.shape[1], m, k, time.perf_counter() - t0, _HOST_COUNTERS, batch=g)
    return out


class ConvPlan:
    """What the convolutions of one group with weight matrix `b` (``[K, O]``, CPU, float; cached as a weight on `owner`
    at `version`) need on one target and quantization config, decided once when the plan is made (which looks the
    weight up as `gemm` does): whether `_fast_float`'s direct path serves them (`direct`: float32, the built-in
    schemes, one limb, a finite weight), the prepared weight `qw`, K per call and the int32 bound of the product. A
    call then runs those operations and nothing else (`__call__`), so the same bits as ``gemm(p, b, weight=True,
    ...)``. The caller keeps a plan with the weight matrix it was made from and its version, and asks `current()`
    before use."""

    __slots__ = ("b_scheme", "config", "direct", "kc", "narrow", "override", "per_line", "qmax", "qw", "s")

    def __init__(self, b: torch.Tensor, owner: object, version: Hashable, config: QuantConfig | None) -> None:
        self.s, self.override, self.config = _kernel(), config, resolve_config(config)
        self.qw = _weight(self.s, b[None], b, True, owner, version, self.config)
        a_scheme, self.b_scheme = self.config.activation_scheme, self.config.weight_scheme
        self.direct = b.dtype == torch.float32 and _direct(self.s, a_scheme, self.b_scheme, self.qw)
        if self.direct:
            self.qmax, self.per_line = self.s.qmax, a_scheme.per_line
            self.kc, self.narrow = _weight_calls(self.s, self.qw, b.shape[0])

    def current(self) -> bool:
        """Whether the active target and the quantization config are still the ones the plan was made for."""
        return self.s is _kernel() and self.config is resolve_config(self.override)

    def __call__(self, p: Patches, bias: torch.Tensor | None, out: torch.Tensor, looked_up: bool
                 ) -> torch.Tensor | None:
        """`_fast_float`'s direct path for patches `p` (float32, one group) into `out` (as `gemm` takes it) with
        `bias`: `out`, or None where a native pass declines (then ``gemm(..., weight=self.qw)``). `looked_up`: the
        weight was looked up in the cache for this call (at the plan's making), else the call counts a cache hit as
        `gemm`'s lookup does."""
        t0 = time.perf_counter()
        qa = hostops.im2col_quantize(p, self.per_line, self.qmax)
        if qa is None:
            return None
        t_quant = time.perf_counter() - t0
        qw = self.qw
        acc = self.s.gemm(qa[0], qw.operand.stacked, self.kc, qw.serial, self.narrow)
        c = _dequantized(acc, qa[1], qw.scale, self.b_scheme, out, bias, t_quant,
                         _FLOAT_COUNTERS if looked_up else _PLANNED_COUNTERS)
        return out if c is out else _into(c, out, bias)


_PLANNED_COUNTERS = {**_FLOAT_COUNTERS, "weight_cache_hits": 1}


def _float_gemm(a3: torch.Tensor | Patches, b3: torch.Tensor, weight_src: torch.Tensor | None,
                handle: bool | QuantizedWeight, owner: object, version: Hashable | None,
                cfg: QuantConfig, out: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The float GEMM; a convolution's `out` and `bias` go to `_fast_float` (the caller writes them otherwise); without
    `out`, `bias` is added to the result (``add_``)."""
    s = _kernel()
    d, qmax = s.digit_bits, s.qmax
    qw = _weight(s, b3, weight_src, handle, owner, version, cfg) if weight_src is not None else None
    fast = _fast_float(s, a3, b3, qw, cfg, out, bias)
    if fast is not None:
        return fast
    t0 = time.perf_counter()
    qa = cfg.activation_scheme.quantize(a3, -1, qmax)
    b_key = None
    if qw is not None:
        bo, sb, bad_b, b_key = qw.operand, qw.scale, qw.bad, qw.serial
        b_scheme = cfg.weight_scheme
    else:
        b_scheme = cfg.activation_scheme
        qb = b_scheme.quantize(b3, -2, qmax)
        bo, sb, bad_b = split(qb.q, d, "b", (-qmax, qmax)), qb.scale, qb.bad
    k = a3.shape[2]
    if b_scheme.group is not None:  # A's K slices meet B's groups: one batch entry per group
        qa_q, k = split_k(qa.q, b_scheme.group), b_scheme.group
    else:
        qa_q = qa.q
    ao = split(qa_q, d, "a", (-qmax, qmax))
    t_quant = time.perf_counter() - t0
    acc = _product(s, ao, bo, a3.shape[1], b3.shape[2], k, b_key)
    t0 = time.perf_counter()
    c = b_scheme.dequantize(acc, qa.scale, sb)
    STATS.record({"quantize": t_quant, "dequantize": time.perf_counter() - t0},
                 {"gemm_float": 1, "limb_products": ao.count * bo.count})
    if qa.bad is not None or bad_b is not None:
        t0 = time.perf_counter()
        _patch_nonfinite(c, a3.materialize() if isinstance(a3, Patches) else a3, b3, qa.bad, bad_b)
        STATS.count("nonfinite_patches")
        STATS.phase("nonfinite", time.perf_counter() - t0)
    c = c if c.dtype == a3.dtype else c.to(a3.dtype)
    return c if out is not None or bias is None else c.add_(bias)


def _patch_nonfinite(c: torch.Tensor, a3: torch.Tensor, b3: torch.Tensor, bad_a: torch.Tensor | None,
                     bad_b: torch.Tensor | None) -> None:
    """Recompute with torch on CPU every output entry whose A row or B column holds NaN/Inf."""
    for bi in range(c.shape[0]):
        bb = b3[bi if b3.shape[0] > 1 else 0]
        ab = a3[bi if a3.shape[0] > 1 else 0]
        if bad_a is not None and bad_a.numel():
            rows = bad_a[bi if bad_a.shape[0] > 1 else 0, :, 0].nonzero().flatten()
            if rows.numel():
                c[bi, rows] = (ab[rows] @ bb).to(c.dtype)
        if bad_b is not None and bad_b.numel():
            cols = bad_b[bi if bad_b.shape[0] > 1 else 0, 0, :].nonzero().flatten()
            if cols.numel():
                c[bi][:, cols] = (ab @ bb[:, cols]).to(c.dtype)


def _int_gemm(a3: torch.Tensor, b3: torch.Tensor, weight_src: torch.Tensor | None,
              handle: bool | QuantizedWeight, owner: object, version: Hashable | None,
              out_dtype: torch.dtype) -> torch.Tensor:
    s = _kernel()
    d = s.digit_bits
    t0 = time.perf_counter()
    ao = split(a3, d, "a")
    b_key = None
    if weight_src is not None:
        qw = _weight(s, b3, weight_src, handle, owner, version, None)
        bo, b_key = qw.operand, qw.serial
    else:
        bo = split(b3, d, "b")
    STATS.record({"limbs": time.perf_counter() - t0}, {"gemm_int": 1, "limb_products": ao.count * bo.count})
    acc = _product(s, ao, bo, a3.shape[1], b3.shape[2], a3.shape[2], b_key)
    if acc.dtype == out_dtype:
        return acc
    info = torch.iinfo(out_dtype)
    if acc.numel() and (acc.dtype == torch.int64 or info.bits < torch.iinfo(acc.dtype).bits):
        lo, hi = (int(v) for v in torch.aminmax(acc))
        if lo < info.min or hi > info.max:
            raise OverflowError(
                f"exact result of the {a3.dtype} GEMM spans [{lo}, {hi}], outside {out_dtype} "
                f"[{info.min}, {info.max}]; pass out_dtype=torch.int64 (or a wider type) — the engine "
                "never truncates")
    return acc.to(out_dtype)
