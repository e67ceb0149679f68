"""Explicit zynq kernels for memory management: allocation, copies across devices, resize.

These cannot go through the boxed fallback (there is no zynq tensor to unwrap, or the copy crosses
devices). Each is registered on the PrivateUse1 key by `register.register()`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from . import report
from .storage import cpu_view, is_zynq, mark_written, new_tensor, resize


def _check_device(device: torch.device | None) -> None:
    if device is not None and device.index not in (None, 0):
        from .module import device_count

        if device.index >= device_count():
            raise RuntimeError(f"zynq device {device} does not exist: {device_count()} zynq device(s) present")


def _dtype(dtype: torch.dtype | None) -> torch.dtype:
    return torch.get_default_dtype() if dtype is None else dtype


# aten::empty.memory_format(SymInt[] size, *, ScalarType? dtype=None, Layout? layout=None, Device? device=None,
#                           bool? pin_memory=None, MemoryFormat? memory_format=None) -> Tensor
def empty_memory_format(size: Sequence[int], dtype: torch.dtype | None = None, layout=None,
                        device: torch.device | None = None, pin_memory=None, memory_format=None) -> torch.Tensor:
    _check_device(device)
    stride = None
    if memory_format not in (None, torch.contiguous_format, torch.preserve_format):
        stride = torch.empty(size, device="meta", memory_format=memory_format).stride()
    return new_tensor(size, stride, _dtype(dtype))


# aten::empty_strided(SymInt[] size, SymInt[] stride, *, ScalarType? dtype=None, Layout? layout=None,
#                     Device? device=None, bool? pin_memory=None) -> Tensor
def empty_strided(size: Sequence[int], stride: Sequence[int], dtype: torch.dtype | None = None, layout=None,
                  device: torch.device | None = None, pin_memory=None) -> torch.Tensor:
    _check_device(device)
    return new_tensor(size, stride, _dtype(dtype))


def _as_cpu(t: torch.Tensor) -> torch.Tensor:
    return cpu_view(t) if is_zynq(t) else t


# aten::_copy_from(Tensor self, Tensor dst, bool non_blocking=False) -> Tensor
def copy_from(self: torch.Tensor, dst: torch.Tensor, non_blocking: bool = False) -> torch.Tensor:
    t0 = time.perf_counter()
    _as_cpu(dst).copy_(_as_cpu(self))
    if is_zynq(dst):
        mark_written(dst)
    report.record("aten::_copy_from", time.perf_counter() - t0, accelerated=False)
    return dst


# aten::_copy_from_and_resize(Tensor self, Tensor dst) -> Tensor
def copy_from_and_resize(self: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    if is_zynq(dst):
        resize(dst, self.shape)
    else:
        dst.resize_(self.shape)
    return copy_from(self, dst)


# aten::resize_(Tensor(a!) self, SymInt[] size, *, MemoryFormat? memory_format=None) -> Tensor(a!)
def resize_(self: torch.Tensor, size: Sequence[int], memory_format=None) -> torch.Tensor:
    resize(self, size)
    if memory_format not in (None, torch.contiguous_format, torch.preserve_format):
        from .storage import set_metadata

        stride = torch.empty(tuple(size), device="meta", memory_format=memory_format).stride()
        set_metadata(self, self.untyped_storage(), self.storage_offset(), size, stride)
    return self


KERNELS = {
    "empty.memory_format": empty_memory_format,
    "empty_strided": empty_strided,
    "_copy_from": copy_from,
    "_copy_from_and_resize": copy_from_and_resize,
    "resize_": resize_,
}
