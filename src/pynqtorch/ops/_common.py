"""Shared plumbing of accelerated ops: unwrap zynq tensors, call the engine, count, fall back when unsupported."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import torch

from ..device.fallback import device_mismatch, run_on_cpu
from ..device.report import record, record_reason
from ..device.storage import adopt_result, cpu_view, is_zynq


class NotOffloadable(Exception):
    """This call of an accelerated op cannot run on the kernel (dtype, layout...); it runs on CPU instead.

    A message (``NotOffloadable("rows of 2048 elements exceed ...")``) is counted as the fallback's reason in
    the report; without one the call is an ordinary CPU fallback (e.g. the op is not selected for offload).
    """


def to_cpu(t: torch.Tensor | None) -> torch.Tensor | None:
    """CPU view of a zynq tensor; CPU tensors must be 0-dim (PyTorch's device rule) and pass through."""
    if t is None or is_zynq(t):
        return None if t is None else cpu_view(t)
    if t.dim() > 0:
        raise device_mismatch(t.device)
    return t


def traced(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, named ``zynq::<name>`` in `torch.profiler` traces when a profiler runs."""
    if torch.autograd.profiler._is_profiler_enabled:
        with torch.profiler.record_function(f"zynq::{name}"):
            return fn(*args, **kwargs)
    return fn(*args, **kwargs)


def accelerated(op: torch._ops.OpOverload, cpu_op: torch._ops.OpOverload | None = None
                ) -> Callable[[Callable[..., torch.Tensor]], Callable[..., Any]]:
    """Register-ready kernel for `op`: runs `fn` (CPU views in, CPU result out) and counts it as accelerated.

    `fn` raises `NotOffloadable` for cases the kernel cannot take; those run through the CPU fallback as
    `cpu_op` (default `op`; for ops CPU has no kernel of, such as `convolution_overrideable`) and are
    counted there, so the report shows them honestly.
    """
    name = op._schema.name + (f".{op._schema.overload_name}" if op._schema.overload_name else "")

    def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def kernel(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                out = traced(name, fn, *args, **kwargs)
            except NotOffloadable as e:
                if e.args and isinstance(e.args[0], str):
                    record_reason(name, e.args[0])
                return run_on_cpu(cpu_op or op, args, kwargs)
            result = tuple(map(adopt_result, out)) if isinstance(out, tuple) else adopt_result(out)
            record(name, time.perf_counter() - t0, accelerated=True)
            return result

        kernel.op = op  # type: ignore[attr-defined]
        return kernel

    return wrap
