"""The one call from ops into the engine: B operands owned by zynq tensors are cached as weights."""

from __future__ import annotations

import torch

from .. import engine
from ..device.storage import is_zynq, write_generation
from ._common import NotOffloadable


def gemm(a: torch.Tensor, b: torch.Tensor, *, b_owner: torch.Tensor | None) -> torch.Tensor:
    """``a @ b`` on CPU views through the engine.

    When `b` views a zynq tensor's memory, its quantization is cached on that tensor's storage and reused
    until the device writes the storage again (the write generation covers in-place ops, `out=`, `copy_`
    and `.data` writes alike).
    """
    if a.dtype not in engine.SUPPORTED_DTYPES:
        raise NotOffloadable(a.dtype)
    try:
        if is_zynq(b_owner):
            return engine.gemm(a, b, weight=True, owner=b_owner, version=write_generation(b_owner))
        return engine.gemm(a, b)
    except OverflowError as e:
        raise OverflowError(f"{e}. With torch ops the result has the operands' dtype: cast the operands to a "
                            "wider integer type first, e.g. a.long() @ b.long()") from None
