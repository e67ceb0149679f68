"""Accelerated aten ops for zynq tensors, registered on PrivateUse1 by one idempotent function."""

from __future__ import annotations

import torch

from ..device import native
from ..hw.families import ROWS_OPS, aten_op
from ..targets import registry
from ..targets.offload import Offload, declared_ops, parse_offload
from . import attention, blockops, conv, gemm, pointwise, recurrent, rows, sdpa

_lib: list[torch.library.Library] = []


def register() -> None:
    """Install the GEMM-family kernels (every overload of `gemm.VALUES`'s ops), the convolution, the decomposed
    transformer fast paths, the overrideable SDPA backend (and its choice), the LSTM/GRU layers (at the autograd key: they hand PyTorch's composite the cases
    that need gradients) and the kernels of the ops map/rows kernels declare (`blockops`)."""
    if _lib:
        return
    lib = torch.library.Library("aten", "IMPL")
    for kernel in gemm.KERNELS + conv.KERNELS:
        lib.impl(blockops.impl_name(kernel.op), kernel, "PrivateUse1")
    for name, fn in {**conv.BACKWARD, **attention.KERNELS, **sdpa.KERNELS}.items():
        lib.impl(name, fn, "PrivateUse1")
    for name, fn in recurrent.AUTOGRAD_KERNELS.items():
        lib.impl(name, fn, "AutogradPrivateUse1")
    _lib.append(lib)
    register_block_ops()
    registry.on_use(register_block_ops)


def register_block_ops(offload: Offload | None = None) -> None:
    """Register kernels for every op a map/rows kernel on the search path declares (and the rows ops, and
    the ops `offload` selects)."""
    ops = set(declared_ops()) | set(ROWS_OPS)
    if offload is not None and offload.ops:
        ops |= offload.ops
    blockops.register(rows.make_kernel, sorted(o for o in ops if o in ROWS_OPS))
    blockops.register(pointwise.make_kernel, sorted(o for o in ops if o not in ROWS_OPS))
    if offload is None:
        current = registry.current()
        try:
            offload = current.offload if current is not None else parse_offload(None)
        except ValueError:  # a bad PYNQTORCH_OFFLOAD: raised on first use, the kernels serve meanwhile
            offload = Offload(None)
    # The kernels of ops not selected only run the CPU fallback: the native one may take their place.
    native.own_kernels({blockops.impl_name(aten_op(o)): offload.selects(o) for o in blockops.registered()})
