"""Element-wise aten ops (``aten::gelu``, ``aten::silu``, ``aten::add.Tensor``...) on `map` kernels.

Any op a map description declares is bound generically from its schema: its tensor arguments are the
kernel's inputs (broadcast together), every other argument must equal the value the description's
``match`` names or, failing that, the schema's default; otherwise the call runs on CPU with that reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..device.storage import is_zynq
from ..engine.blocks import Unsupported, run_map
from ._common import NotOffloadable, accelerated, to_cpu
from .blockops import binding, unsupported


def bind_arguments(op: torch._ops.OpOverload, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's value of every schema argument of `op`, by name (defaults filled in)."""
    out = {}
    for i, a in enumerate(op._schema.arguments):
        if i < len(args) and not a.kwarg_only:
            out[a.name] = args[i]
        elif a.name in kwargs:
            out[a.name] = kwargs[a.name]
        else:
            out[a.name] = a.default_value
    return out


def make_kernel(op: torch._ops.OpOverload) -> Callable[..., Any]:
    """The PrivateUse1 kernel of element-wise op `op`."""
    aten = op._schema.name + (f".{op._schema.overload_name}" if op._schema.overload_name else "")
    tensor_args = [a.name for a in op._schema.arguments if isinstance(a.type, torch._C.TensorType)]

    @accelerated(op)
    def kernel(*args: Any, **kwargs: Any) -> torch.Tensor:
        b = binding(aten)
        values = bind_arguments(op, args, kwargs)
        for a in op._schema.arguments:
            if a.name in tensor_args:
                continue
            want = b.desc.match.get(a.name, a.default_value)
            if values[a.name] != want:
                raise NotOffloadable(f"{a.name}={values[a.name]!r}: kernel {b.desc.name} computes {a.name}={want!r}")
        inputs = [values[n] for n in tensor_args]
        if not all(isinstance(t, torch.Tensor) and is_zynq(t) for t in inputs):
            raise NotOffloadable(f"a scalar or CPU operand: kernel {b.desc.name} takes zynq tensors")
        try:
            return run_map(b, [to_cpu(t) for t in inputs])
        except Unsupported as e:
            raise unsupported(e) from None

    return kernel
