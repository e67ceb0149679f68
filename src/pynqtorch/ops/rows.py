"""Ops over the last dim (``aten::_softmax``, ``aten::_log_softmax``, ``aten::native_layer_norm``) on `rows` kernels.

Calls the kernel cannot take (another dim, ``half_to_float``, a normalized shape of several dims, rows
longer than its buffer, other dtypes) run on CPU with the reason counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..engine.blocks import Unsupported, run_rows
from ._common import NotOffloadable, accelerated, to_cpu
from .blockops import binding, unsupported


def _softmax_like(op: torch._ops.OpOverload, aten: str) -> Callable[..., Any]:
    # aten::_softmax(Tensor self, int dim, bool half_to_float) -> Tensor  (and _log_softmax)
    @accelerated(op)
    def kernel(self: torch.Tensor, dim: int, half_to_float: bool) -> torch.Tensor:
        b = binding(aten)
        if half_to_float:
            raise NotOffloadable("half_to_float=True")
        if self.dim() and dim % self.dim() != self.dim() - 1:
            raise NotOffloadable(f"dim={dim} is not the last dim of a {self.dim()}-D tensor")
        try:
            return run_rows(b, to_cpu(self), {}, {})["out"]
        except Unsupported as e:
            raise unsupported(e) from None

    return kernel


def _layer_norm(op: torch._ops.OpOverload, aten: str) -> Callable[..., Any]:
    # aten::native_layer_norm(Tensor input, SymInt[] normalized_shape, Tensor? weight, Tensor? bias, float eps)
    #     -> (Tensor, Tensor, Tensor)
    @accelerated(op)
    def kernel(input: torch.Tensor, normalized_shape: Sequence[int], weight: torch.Tensor | None,
               bias: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = binding(aten)
        if len(normalized_shape) != 1 or input.dim() == 0 or input.shape[-1] != normalized_shape[0]:
            raise NotOffloadable(f"normalized_shape={list(normalized_shape)} is not the last dim of "
                                 f"{list(input.shape)}")
        try:
            r = run_rows(b, to_cpu(input), {"weight": to_cpu(weight), "bias": to_cpu(bias)}, {"eps": float(eps)})
        except Unsupported as e:
            raise unsupported(e) from None
        return r["out"], r["mean"].unsqueeze(-1), r["rstd"].unsqueeze(-1)

    return kernel


_MAKERS = {"aten::_softmax": _softmax_like, "aten::_log_softmax": _softmax_like,
           "aten::native_layer_norm": _layer_norm}


def make_kernel(op: torch._ops.OpOverload) -> Callable[..., Any]:
    """The PrivateUse1 kernel of rows op `op` (one of `hw.families.ROWS_OPS`)."""
    aten = op._schema.name
    return _MAKERS[aten](op, aten)
