"""Binding non-GEMM aten ops to map/rows kernels: the op's kernel on the active target, or why it runs on CPU.

Kernels for the ops of every map/rows description are registered on PrivateUse1 by `ops.register_block_ops`
(at import for those found then, later for ops of kernels added since, when `use(offload=...)` selects them). Each call asks the active
target for the op's binding: ops outside the offload selection run on the CPU fallback as before; ops the
target cannot run, or inputs the kernel cannot take, run there too with a counted reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from ..engine.blocks import Binding, Unsupported
from ..hw.families import aten_op
from ..targets import registry
from ._common import NotOffloadable

_registered: dict[str, Callable[..., Any]] = {}
_libs: list[torch.library.Library] = []


def binding(aten: str) -> Binding:
    """The kernel and units running `aten` now; `NotOffloadable` (with a reason when it was selected)."""
    found = registry.active().block_binding(aten)
    if found is None:
        raise NotOffloadable
    if isinstance(found, str):
        raise NotOffloadable(found)
    return Binding(aten, *found)


def unsupported(e: Unsupported) -> NotOffloadable:
    return NotOffloadable(str(e))


def impl_name(op: torch._ops.OpOverload) -> str:
    """`op`'s name for `torch.library.Library.impl` (``add.Tensor``, ``gelu``)."""
    schema = op._schema
    return schema.name.split("::")[1] + (f".{schema.overload_name}" if schema.overload_name else "")


def registered() -> list[str]:
    """The aten ops (``aten::gelu``) with a kernel registered here."""
    return list(_registered)


def register(make: Callable[[torch._ops.OpOverload], Callable[..., Any]], ops: list[str]) -> None:
    """Register `make(op)` on PrivateUse1 for each aten op name in `ops` not registered yet."""
    new = [op for op in ops if op not in _registered]
    if not new:
        return
    if not _libs:
        _libs.append(torch.library.Library("aten", "IMPL"))
    for name in new:
        op = aten_op(name)
        kernel = make(op)
        with warnings.catch_warnings():  # replacing the CPU fallback registered for an op added later
            warnings.simplefilter("ignore", UserWarning)
            _libs[0].impl(impl_name(op), kernel, "PrivateUse1")
        _registered[name] = kernel
