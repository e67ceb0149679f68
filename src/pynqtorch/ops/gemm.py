"""GEMM-family aten ops on the engine: every overload (functional, `out=`, in-place) of mm, addmm, bmm,
baddbmm, addbmm, addr, mv, addmv, dot, vdot and _addmm_activation.

`matmul` and `linear` are composite in PyTorch and reach these (linear → addmm/matmul → mm/bmm), so every
broadcasting case of matmul lands here. The second operand (B) is the one whose quantization is cached when it
is a weight (`engine_bridge.weight_of`: a parameter, as in linear layers); any other B (``q @ k.transpose(-2, -1)``)
takes the activation scheme per call.

Each op's values come from one function of its functional form (`VALUES`); the overloads are taken from
PyTorch's registry (`family_overloads`), so a new `out=` or in-place overload cannot silently miss the
kernel. Every call first runs the overload's meta kernel on meta twins of the arguments: it validates the
call as CPU does and gives the result's dtype, shape and strides (and the geometry an `out=` tensor is
resized to). Calls the meta kernel refuses run on CPU, which raises CPU's own error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .. import engine
from ..device.fallback import mark_written_args, run_on_cpu
from ..device.report import record
from ..device.storage import adopt_result, cpu_view, resize
from ._common import NotOffloadable, to_cpu, traced
from .engine_bridge import gemm, weight_of

aten = torch.ops.aten


def _check(*ts: torch.Tensor) -> None:
    """Operands the engine takes, of one dtype; other calls run on CPU (which computes them or raises its
    own error)."""
    for t in ts:
        if t.dtype not in engine.SUPPORTED_DTYPES:
            raise NotOffloadable(t.dtype)
    if len({t.dtype for t in ts}) > 1:
        raise NotOffloadable("operands of different dtypes")


def _scale_add(acc: torch.Tensor, bias: torch.Tensor | None, beta: complex, alpha: complex) -> torch.Tensor:
    """beta * bias + alpha * acc with CPU's conventions: beta == 0 ignores NaN in bias; for integer results
    the scalars are converted to the result type first (CPU's `alpha.to<scalar_t>()`: 0.5 is 0)."""
    if not acc.dtype.is_floating_point:
        alpha, beta = int(alpha), int(beta)
    if alpha != 1:
        acc = acc * alpha
    if bias is None or beta == 0:
        return acc
    bias = bias if beta == 1 else bias * beta
    if bias.dtype == acc.dtype and bias.dim() <= acc.dim() and bias.shape == acc.shape[acc.dim() - bias.dim():]:
        return acc.add_(bias)
    return acc + bias


def _mm(self: torch.Tensor, mat2: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    _check(self, mat2)
    return gemm(to_cpu(self), to_cpu(mat2), b_owner=weight_of(mat2), bias=bias)


def _addmm(self: torch.Tensor, mat1: torch.Tensor, mat2: torch.Tensor, *, beta: complex = 1,
           alpha: complex = 1) -> torch.Tensor:
    bias = to_cpu(self)
    if (beta == 1 and alpha == 1 and bias.dim() == 1 and mat1.dtype == bias.dtype == torch.float32
            and mat2.dtype == torch.float32 and bias.shape == mat2.shape[1:]):
        # a linear layer's bias: added by the engine (as `_scale_add` adds it), in the native pass of a small product
        return _mm(mat1, mat2, bias)
    return _scale_add(_mm(mat1, mat2), bias, beta, alpha)


def _addmm_activation(self: torch.Tensor, mat1: torch.Tensor, mat2: torch.Tensor, *, beta: complex = 1,
                      alpha: complex = 1, use_gelu: bool = False) -> torch.Tensor:
    out = _addmm(self, mat1, mat2, beta=beta, alpha=alpha)
    return torch.nn.functional.gelu(out, approximate="tanh") if use_gelu else out.relu_()


def _baddbmm(self: torch.Tensor, batch1: torch.Tensor, batch2: torch.Tensor, *, beta: complex = 1,
             alpha: complex = 1) -> torch.Tensor:
    return _scale_add(_mm(batch1, batch2), to_cpu(self), beta, alpha)


def _addbmm(self: torch.Tensor, batch1: torch.Tensor, batch2: torch.Tensor, *, beta: complex = 1,
            alpha: complex = 1) -> torch.Tensor:
    # sum_b batch1[b] @ batch2[b] is one GEMM over K = B*K: [M, B*K] @ [B*K, N].
    _check(batch1, batch2)
    b, m, k = batch1.shape
    a = to_cpu(batch1).permute(1, 0, 2).reshape(m, b * k)
    acc = gemm(a, to_cpu(batch2).reshape(b * k, batch2.shape[2]), b_owner=weight_of(batch2))
    return _scale_add(acc, to_cpu(self), beta, alpha)


def _mv(self: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    _check(self, vec)
    # y = A v  ==  (v^T A^T)^T: the matrix is the B operand (cached if a weight).
    return gemm(to_cpu(vec).unsqueeze(0), to_cpu(self).t(), b_owner=weight_of(self)).squeeze(0)


def _addmv(self: torch.Tensor, mat: torch.Tensor, vec: torch.Tensor, *, beta: complex = 1,
           alpha: complex = 1) -> torch.Tensor:
    return _scale_add(_mv(mat, vec), to_cpu(self), beta, alpha)


def _addr(self: torch.Tensor, vec1: torch.Tensor, vec2: torch.Tensor, *, beta: complex = 1,
          alpha: complex = 1) -> torch.Tensor:
    _check(vec1, vec2)
    acc = gemm(to_cpu(vec1).unsqueeze(1), to_cpu(vec2).unsqueeze(0), b_owner=weight_of(vec2))
    return _scale_add(acc, to_cpu(self), beta, alpha)


def _dot(self: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    _check(self, tensor)
    return gemm(to_cpu(self).unsqueeze(0), to_cpu(tensor).unsqueeze(1), b_owner=weight_of(tensor)).reshape(())


# The functional form of each family op, computing its values from zynq (or 0-dim CPU) arguments.
VALUES: dict[str, Callable[..., torch.Tensor]] = {
    "mm": _mm, "addmm": _addmm, "_addmm_activation": _addmm_activation, "bmm": _mm, "baddbmm": _baddbmm,
    "addbmm": _addbmm, "mv": _mv, "addmv": _addmv, "addr": _addr, "dot": _dot, "vdot": _dot,
}


def family_overloads() -> Iterator[tuple[torch._ops.OpOverload, str]]:
    """Every overload of the family CPU runs (functional, `out=`, in-place), with its base op's name:
    overloads CPU has no kernel for (CUDA's `mm.dtype`) stay on the fallback, which raises CPU's error."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    for base in VALUES:
        for name in (base, base + "_"):
            packet = getattr(aten, name, None)
            for overload in packet.overloads() if packet is not None else ():
                op = getattr(packet, overload)
                qualified = f"aten::{name}" + ("" if overload == "default" else f".{overload}")
                if has(qualified, "CPU") or has(qualified, "CompositeExplicitAutograd"):
                    yield op, base


def _meta(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return torch.empty_strided(v.size(), v.stride(), dtype=v.dtype, device="meta")
    return v


_META_CACHE: dict[tuple, Any] = {}
_META_CACHE_SIZE = 4096


class _MixesDevices(Exception):
    """A call with a CPU tensor of one or more dimensions among zynq ones."""


def _geometry(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        if v.device.type != "zynq" and v.dim() > 0:
            raise _MixesDevices
        return v.size(), v.stride(), v.dtype
    return type(v), v


def _meta_result(op: torch._ops.OpOverload, name: str, args: tuple, kwargs: dict) -> Any:
    """The meta kernel of overload `op` (named `name`) on meta twins of the arguments (raises what it raises), cached
    by the arguments' geometry and scalars: PyTorch's meta formulas run as Python decompositions (~0.8 ms).
    `_MixesDevices` first when the call mixes devices (the meta kernel would not see it)."""
    key = (name, tuple(map(_geometry, args)),
           tuple((k, _geometry(kwargs[k])) for k in sorted(kwargs)) if kwargs else ())
    try:
        return _META_CACHE[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable scalar: no caching
        return op(*(_meta(a) for a in args), **{k: _meta(v) for k, v in kwargs.items()})
    meta = op(*(_meta(a) for a in args), **{k: _meta(v) for k, v in kwargs.items()})
    if len(_META_CACHE) >= _META_CACHE_SIZE:
        _META_CACHE.clear()
    _META_CACHE[key] = meta
    return meta


def family_kernel(op: torch._ops.OpOverload, base: str) -> Callable[..., Any]:
    """Zynq kernel of `op`, an overload of family op `base`: values from `VALUES[base]`, semantics from the
    meta kernel (dtype, shape, strides, errors), `out=` resized like CPU's, in-place writing `self`."""
    schema = op._schema
    name = schema.name + (f".{schema.overload_name}" if schema.overload_name else "")
    values = VALUES[base]
    outs = tuple(a.name for a in schema.arguments if a.kwarg_only and a.alias_info is not None
                 and a.alias_info.is_write)
    inplace = schema.name.endswith("_")

    def kernel(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            meta = _meta_result(op, name, args, kwargs)
        except Exception:  # noqa: BLE001 - mixed devices or an invalid call: CPU raises its own error
            return run_on_cpu(op, args, kwargs)
        fkwargs = {k: v for k, v in kwargs.items() if k not in outs} if kwargs else kwargs
        try:
            r = traced(name, values, *args, **fkwargs)
        except NotOffloadable:
            return run_on_cpu(op, args, kwargs)
        if outs or inplace:
            dst = kwargs[outs[0]] if outs else args[0]
            if outs:
                meta = meta[0] if isinstance(meta, tuple) else meta
                resize(dst, meta.size(), meta.stride())
            cpu_view(dst).copy_(r)
            mark_written_args(op, args, kwargs)
            result = dst
        else:
            if r.dtype != meta.dtype or r.stride() != meta.stride():
                r = torch.empty_strided(meta.size(), meta.stride(), dtype=meta.dtype).copy_(r)
            result = adopt_result(r)
        record(name, time.perf_counter() - t0, accelerated=True)
        return result

    kernel.op = op  # type: ignore[attr-defined]
    return kernel


KERNELS = [family_kernel(op, base) for op, base in family_overloads()]
