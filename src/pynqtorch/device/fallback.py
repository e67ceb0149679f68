"""The boxed CPU fallback: any aten op without a zynq kernel runs on CPU views of the zynq tensors.

Inputs are replaced by CPU views aliasing their host memory, so in-place ops and `out=` arguments write
the zynq data directly. Results that alias an input's memory (views) become zynq views of that input's
storage; fresh results become new zynq tensors that take over the CPU memory. Every call is counted for
`pynqtorch.report()`; strict mode turns compute ops into errors.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from . import report
from .kernels import check_device
from .storage import (
    CPU_KEYS,
    adopt_result,
    alias,
    cpu_view,
    is_zynq,
    mark_written,
    sync_from_cpu,
)

log = logging.getLogger("pynqtorch.ops")

_CPU = torch.device("cpu")
# Ops that only move or reshape memory: allowed in strict mode (they compute nothing).
_MEMORY_OPS = {"aten::_to_copy", "aten::clone", "aten::copy_", "aten::empty_like", "aten::zero_", "aten::fill_",
               "aten::_local_scalar_dense", "aten::resize_", "aten::contiguous", "aten::lift_fresh",
               "aten::stack", "aten::cat", "aten::new_empty_strided", "aten::new_empty"}
# Said of nested results (native.cpp says the same).
NESTED_HINT = (" (nn.TransformerEncoder makes nested tensors from a src_key_padding_mask: build it with "
               "enable_nested_tensor=False)")
# Ops that may take CPU index tensors with zynq data, as PyTorch allows for other accelerators.
_MIXED_DEVICE_OK = {"aten::index", "aten::index_put_", "aten::_index_put_impl_", "aten::index_put"}


class StrictModeError(RuntimeError):
    """Raised in strict mode when an op would run on the CPU fallback."""


_strict = os.environ.get("PYNQTORCH_STRICT", "") not in ("", "0")
_debug = os.environ.get("PYNQTORCH_DEBUG", "") not in ("", "0")
_watchers: list[Callable[[], None]] = []


def strict(enabled: bool | None = None) -> bool:
    """Get, or set, strict mode: when on, ops without a zynq kernel raise instead of running on CPU."""
    global _strict
    if enabled is not None and bool(enabled) != _strict:
        _strict = bool(enabled)
        for fn in _watchers:
            fn()
    return _strict


def checked() -> bool:
    """Whether every fallback call must pass through `run_on_cpu` (strict mode or debug logging is on)."""
    return _strict or _debug


def watch(fn: Callable[[], None]) -> None:
    """Call `fn` whenever strict mode changes."""
    _watchers.append(fn)


@dataclass(frozen=True)
class _Plan:
    name: str
    memory_only: bool
    mixed_ok: bool
    written: tuple[int | str, ...]  # positions / names of the arguments the op writes (tensors or tensor lists)
    record_name: str
    tensor_args: tuple[int, ...]  # positions of plain Tensor arguments (a wrapped number may arrive there)


_plans: dict[Any, _Plan] = {}


def _plan(op: Any) -> _Plan:
    """What the fallback needs to know about `op`, parsed from its schema once and cached."""
    plan = _plans.get(op)
    if plan is None:
        schema = op._schema
        name = schema.name
        full = name + (f".{schema.overload_name}" if schema.overload_name else "")
        views = any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)
        written = tuple(a.name if a.kwarg_only else i for i, a in enumerate(schema.arguments)
                        if a.alias_info is not None and a.alias_info.is_write)
        tensor_args = tuple(i for i, a in enumerate(schema.arguments)
                            if not a.kwarg_only and isinstance(a.type, torch._C.TensorType))
        plan = _plans[op] = _Plan(full, views or name in _MEMORY_OPS, name in _MIXED_DEVICE_OK, written,
                                  f"zynq::cpu_fallback::{full}", tensor_args)
    return plan


_NUMBER = (bool, int, float, complex)
_scalar_overloads: dict[tuple[Any, tuple[int, ...]], Any] = {}


def _scalar_overload(op: Any, positions: tuple[int, ...]) -> Any:
    """The overload of `op` taking Scalars at `positions` where `op` takes Tensors (`remainder.Scalar` for
    `remainder.Tensor`), or None."""
    key = (op, positions)
    if key not in _scalar_overloads:
        schema = op._schema
        packet = getattr(torch.ops.aten, schema.name.split("::")[1])
        found = None
        for overload in packet.overloads():
            cand = getattr(packet, overload)._schema
            if len(cand.arguments) == len(schema.arguments) and all(
                    str(c.type) == ("number" if i in positions else str(a.type))
                    for i, (a, c) in enumerate(zip(schema.arguments, cand.arguments))) and [
                    str(r.type) for r in cand.returns] == [str(r.type) for r in schema.returns]:
                found = getattr(packet, overload)
                break
        _scalar_overloads[key] = found
    return _scalar_overloads[key]


def _number_tensor(v: complex, args: tuple) -> torch.Tensor:
    """A 0-dim CPU tensor standing in for wrapped number `v`, typed so it promotes as the number would."""
    dtypes = [a.dtype for a in args if isinstance(a, torch.Tensor)]
    if isinstance(v, bool):
        dtype = torch.bool
    elif isinstance(v, int):
        dtype = torch.int64
    elif isinstance(v, float):
        dtype = next((d for d in dtypes if d.is_floating_point or d.is_complex), torch.get_default_dtype())
        dtype = dtype.to_real() if dtype.is_complex else dtype
    else:
        dtype = next((d for d in dtypes if d.is_complex), None) or (
            torch.complex128 if torch.float64 in dtypes else torch.complex64)
    return torch.tensor(v, dtype=dtype)


def _wrapped_numbers(op: Any, plan: _Plan, args: tuple) -> tuple[Any, tuple]:
    """PyTorch hands 0-dim "wrapped number" tensors to Python kernels as Python numbers, which the CPU op
    would reject: call its Scalar overload instead, or pass an equivalent 0-dim CPU tensor."""
    positions = tuple(i for i in plan.tensor_args if i < len(args) and isinstance(args[i], _NUMBER))
    if not positions:
        return op, args
    scalar_op = _scalar_overload(op, positions)
    if scalar_op is not None:
        return scalar_op, args
    return op, tuple(_number_tensor(a, args) if i in positions else a for i, a in enumerate(args))


def device_mismatch(other: torch.device, op_name: str | None = None) -> RuntimeError:
    """PyTorch's error for a zynq tensor meeting a non-scalar tensor on `other` (in op `op_name`)."""
    where = f" (in {op_name})" if op_name else ""
    return RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                        f"zynq:0 and {other}!{where}")


class _Unwrapper:
    """Replaces zynq tensors by CPU views, remembering them to map results back."""

    __slots__ = ("pairs", "plan", "views", "wrap")

    def __init__(self, plan: _Plan) -> None:
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.views: dict[int, torch.Tensor] = {}  # id of a zynq argument -> its CPU view
        self.plan = plan
        self.wrap = True

    def arg(self, a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            if a.device.type == "zynq":
                c = self.views.get(id(a))  # one tensor passed twice (`mul.out(self, x, out=self)`) stays one
                if c is None:
                    c = self.views[id(a)] = cpu_view(a)
                    self.pairs.append((a, c))
                return c
            if a.dim() > 0 and not self.plan.mixed_ok:
                raise device_mismatch(a.device, self.plan.name)
            return a
        if isinstance(a, (list, tuple)) and a and any(isinstance(x, torch.Tensor) for x in a):
            return type(a)(self.arg(x) for x in a)
        if isinstance(a, torch.device):
            if a.type == "zynq":
                check_device(a)  # a factory's device: zynq:0 only
                return _CPU
            self.wrap = False
        return a

    def result(self, r: Any) -> Any:
        if isinstance(r, torch.Tensor):
            if not self.wrap or r.device.type != "cpu":
                return r
            for t, c in self.pairs:
                if r is c:
                    return t
            if r.layout is not torch.strided or r.is_nested:
                raise RuntimeError(f"{self.plan.name} made a {'nested' if r.is_nested else r.layout} tensor: zynq "
                                   "tensors are dense (strided) only; use CPU tensors for other layouts"
                                   f"{NESTED_HINT if r.is_nested else ''}")
            sid = r.untyped_storage()._cdata
            for t, c in self.pairs:
                if c.untyped_storage()._cdata == sid:
                    return alias(t, r)
            return adopt_result(r)
        if isinstance(r, (list, tuple)):
            return type(r)(self.result(x) for x in r)
        return r

    def sync_written(self, args: tuple, kwargs: dict) -> None:
        """Carry `out=`/in-place geometry changes made on CPU views back to the zynq tensors written, and
        bump their write generation."""
        for t in written_tensors(self.plan, args, kwargs):
            c = self.views.get(id(t))
            if c is not None:
                sync_from_cpu(t, c)
            mark_written(t)


def written_tensors(plan: _Plan, args: tuple, kwargs: dict) -> Iterator[torch.Tensor]:
    """The zynq tensors a call writes: every `Tensor(a!)`, `Tensor(a!)?` and `Tensor(a!)[]` argument of its schema."""
    for w in plan.written:
        v = args[w] if isinstance(w, int) and w < len(args) else kwargs.get(w) if isinstance(w, str) else None
        for t in v if isinstance(v, (list, tuple)) else (v,):
            if is_zynq(t):
                yield t


def mark_written_args(op: Any, args: tuple, kwargs: dict) -> None:
    """Bump the write generation of every zynq tensor `op` writes in this call (for kernels outside the fallback)."""
    plan = _plan(op)
    if plan.written:
        for t in written_tensors(plan, args, kwargs):
            mark_written(t)


def run_on_cpu(op: Any, args: tuple, kwargs: dict) -> Any:
    """Run `op` with zynq tensors replaced by CPU views and map the results back to zynq tensors."""
    plan = _plan(op)
    if _strict and not plan.memory_only:
        raise StrictModeError(
            f"{plan.name} has no zynq kernel and strict mode forbids the CPU fallback "
            "(pynqtorch.strict(False) or PYNQTORCH_STRICT=0 allows it)")
    if _debug:
        log.warning("zynq: %s -> cpu fallback", plan.name)
    t0 = time.perf_counter()
    cpu_op = op
    if plan.tensor_args:
        cpu_op, args = _wrapped_numbers(op, plan, args)
    if plan.mixed_ok and args and isinstance(args[0], torch.Tensor) and not is_zynq(args[0]):
        # PyTorch allows `dev_tensor[{cpu,dev}_index]` only: a CPU tensor indexed by zynq indices is refused.
        if len(args) > 1 and isinstance(args[1], (list, tuple)) and any(is_zynq(i) for i in args[1]):
            raise RuntimeError(f"indices should be either on cpu or on the same device as the indexed tensor "
                               f"({args[0].device})")
        raise device_mismatch(args[0].device, plan.name)
    u = _Unwrapper(plan)
    cargs = tuple(u.arg(a) for a in args)
    ckwargs = {k: u.arg(v) for k, v in kwargs.items()} if kwargs else kwargs
    if torch.autograd.profiler._is_profiler_enabled:
        with torch.profiler.record_function(plan.record_name):
            out = cpu_op(*cargs, **ckwargs)
    else:
        out = cpu_op(*cargs, **ckwargs)
    if plan.written:
        u.sync_written(args, kwargs)
    res = u.result(out)
    report.record(plan.name, time.perf_counter() - t0, accelerated=False)
    return res


def _boxed_fallback(op: Any, *args: Any, **kwargs: Any) -> Any:
    return run_on_cpu(op, args, kwargs)


def direct_kernels() -> dict[str, Callable[..., Any]]:
    """CPU-fallback kernels registered directly for ops PyTorch would otherwise decompose on zynq.

    - Functional and in-place forms of structured ops: PyTorch would run them as `empty` (a zynq
      allocation) followed by the `out=` form, two Python calls and an output handed over twice. Direct,
      the op runs on CPU in one call, its fresh result is adopted, and the report names the op the user
      called (`add.Tensor`).
    - Ops with a CPU kernel and a generic composite (`native_layer_norm`, `native_group_norm`, ...):
      the composite would give results that differ from CPU in the last bits.
    """
    kernels: dict[str, Callable[..., Any]] = {}
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    names = set(torch._C._dispatch_get_all_op_names())
    for qualified in names:
        ns, _, name = qualified.partition("::")
        if ns != "aten" or has(qualified, "PrivateUse1"):
            continue
        if not (has(qualified, "CompositeExplicitAutogradNonFunctional")
                or (has(qualified, "CPU") and has(qualified, "CompositeExplicitAutograd"))):
            continue
        base, _, overload = name.partition(".")
        functional = f"aten::{base[:-1]}"
        if base.endswith("_") and functional in names and has(functional, "PrivateUse1"):
            continue  # the in-place form of an accelerated op: its composite calls the zynq kernel
        op = getattr(getattr(torch.ops.aten, base), overload or "default")
        kernels[name] = functools.partial(_boxed_fallback, op)
    for name in _DEVICE_CHECKED_COMPOSITES:
        base, _, overload = name.partition(".")
        kernels[name] = functools.partial(_boxed_fallback, getattr(getattr(torch.ops.aten, base), overload))
    for name in METADATA_VIEWS:
        base, _, overload = name.partition(".")
        kernels[name] = _metadata_view(getattr(getattr(torch.ops.aten, base), overload or "default"))
    return kernels


def native_candidates(direct: Iterable[str]) -> list[str]:
    """Ops (``add.Tensor``) whose CPU fallback the native one (`native.py`) may run: the `direct` kernels'
    ops, the ops without a zynq kernel or composite that reach the boxed fallback (and have a CPU kernel), and
    `_NATIVE_COMPOSITES`; minus the ops that write an
    argument (their write generation and `out=` resizes are Python's) and the mixed-device ops. The metadata
    views are candidates too, for a kernel of their own (`_metadata_view` in C++). Call before the Python
    kernels are registered."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    names = set(direct) | {*_NATIVE_COMPOSITES, *METADATA_VIEWS}
    composites = ("PrivateUse1", "CompositeExplicitAutogradNonFunctional", "CompositeExplicitAutograd",
                  "CompositeImplicitAutograd")
    for qualified in torch._C._dispatch_get_all_op_names():
        if qualified.startswith("aten::") and has(qualified, "CPU") and not any(has(qualified, k) for k in composites):
            names.add(qualified[6:])
    return sorted(n for n in names if native_eligible(n))


def native_eligible(name: str) -> bool:
    """Whether the native fallback may run op `name` (``add.Tensor``): it writes no argument (written ones
    need `sync_from_cpu` and a write generation) and is not a mixed-device op."""
    base, _, overload = name.partition(".")
    schema = torch._C._get_schema(f"aten::{base}", overload)
    return (f"aten::{base}" not in _MIXED_DEVICE_OK
            and not any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments))


# Composites that would be two or more calls on zynq (`empty` + an `out=` form, `fill_` or `copy_`, the last ones
# through Python as they write) and that CPU runs as the same composite: natively, one call of the composite on CPU
# views. The factories among them (`ones`, `arange`, `scalar_tensor`...) are what models call inside attention
# masks, positions and padding.
_NATIVE_COMPOSITES = ("clone", "where.self", "abs", "constant_pad_nd", "scalar_tensor", "arange", "arange.start",
                      "arange.start_step", "ones", "zeros", "full", "new_zeros", "new_ones", "new_full", "zeros_like",
                      "ones_like", "full_like")


# Composite ops whose implementation accepts only listed device types (`mode.values`: "mode only supports
# CPU, CUDA and XPU device type"): run on CPU views instead.
_DEVICE_CHECKED_COMPOSITES = ("mode.values",)

# View ops whose CPU kernel only makes a TensorImpl sharing `self`'s storage with new sizes, strides and offset
# (device-agnostic code; `as_strided` is behind `t`, `transpose`, `expand`, slicing...). `unfold` is not
# here: its CPU kernel calls `as_strided`, which would be counted a second time.
METADATA_VIEWS = ("as_strided", "view", "_reshape_alias", "view_as_real", "view_as_complex")


def _metadata_view(op: Any) -> Callable[..., Any]:
    """Kernel running `op`'s CPU kernel on the zynq tensor itself: the view keeps the zynq storage, dispatch
    keys (so inference mode and conj/neg bits) and CPU's checks and errors; counted in the report."""
    redispatch = op._handle.redispatch_boxed
    name = _plan(op).name

    def kernel(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = redispatch(CPU_KEYS, *args, **kwargs)
        report.record(name, time.perf_counter() - t0, accelerated=False)
        return out

    return kernel
