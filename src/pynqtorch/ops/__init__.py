"""Accelerated aten ops for zynq tensors, registered on PrivateUse1 by one idempotent function."""

from __future__ import annotations

import torch

from . import conv, gemm

_lib: list[torch.library.Library] = []


def register() -> None:
    """Install the GEMM-family kernels (mm, addmm, bmm, baddbmm, mv, addmv, dot, convolution)."""
    if _lib:
        return
    lib = torch.library.Library("aten", "IMPL")
    for kernel in gemm.KERNELS + conv.KERNELS:
        schema = kernel.op._schema
        lib.impl(schema.name.split("::")[1] + (f".{schema.overload_name}" if schema.overload_name else ""),
                 kernel, "PrivateUse1")
    for name, fn in conv.BACKWARD.items():
        lib.impl(name, fn, "PrivateUse1")
    _lib.append(lib)
