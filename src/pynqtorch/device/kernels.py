"""Explicit zynq kernels for memory management: allocation, copies across devices, resize.

These cannot go through the boxed fallback (there is no zynq tensor to unwrap, or the copy crosses
devices). Each is registered on the PrivateUse1 key by `register.register()`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from . import report
from .allocator import get_allocator
from .storage import (
    contiguous_strides,
    cpu_view,
    is_zynq,
    make_storage,
    mark_written,
    new_tensor,
    resize,
    set_metadata,
    storage_host,
)


def check_device(device: torch.device | None) -> None:
    """Tensors live on zynq:0 (one host memory); other indices are boards used as extra compute units."""
    if device is None or device.index in (None, 0):
        return
    from .module import device_count

    if device.index >= device_count():
        raise RuntimeError(f"zynq device {device} does not exist: {device_count()} zynq device(s) present")
    raise RuntimeError(f"cannot place a tensor on {device}: zynq tensors live on zynq:0, in the host memory "
                       "every board reads; further boards add compute units to the same device "
                       "(the board target spreads every GEMM over all boards of PYNQ_REMOTE_DEVICES)")


def _format_strides(size: Sequence[int], memory_format: torch.memory_format | None) -> tuple[int, ...] | None:
    """Strides of `memory_format` for `size`; None for the contiguous (default) layout."""
    if memory_format in (None, torch.contiguous_format, torch.preserve_format):
        return None
    return torch.empty(tuple(size), device="meta", memory_format=memory_format).stride()


def _dtype(dtype: torch.dtype | None) -> torch.dtype:
    return torch.get_default_dtype() if dtype is None else dtype


# aten::empty.memory_format(SymInt[] size, *, ScalarType? dtype=None, Layout? layout=None, Device? device=None,
#                           bool? pin_memory=None, MemoryFormat? memory_format=None) -> Tensor
def empty_memory_format(size: Sequence[int], dtype: torch.dtype | None = None, layout=None,
                        device: torch.device | None = None, pin_memory=None, memory_format=None) -> torch.Tensor:
    check_device(device)
    return new_tensor(size, _format_strides(size, memory_format), _dtype(dtype))


# aten::empty_strided(SymInt[] size, SymInt[] stride, *, ScalarType? dtype=None, Layout? layout=None,
#                     Device? device=None, bool? pin_memory=None) -> Tensor
def empty_strided(size: Sequence[int], stride: Sequence[int], dtype: torch.dtype | None = None, layout=None,
                  device: torch.device | None = None, pin_memory=None) -> torch.Tensor:
    check_device(device)
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
    return resize(self, size, _format_strides(size, memory_format))


def _zynq_storage(self: torch.Tensor, source: torch.UntypedStorage) -> torch.UntypedStorage:
    if source.device.type != "zynq":
        raise RuntimeError(f"Attempted to set the storage of a tensor on device \"{self.device}\" to a storage "
                           f"on different device \"{source.device}\".  This is no longer allowed; the devices "
                           "must match.")
    storage_host(source)
    return source


# aten::set_.source_Storage_storage_offset(Tensor(a!) self, Storage source, SymInt storage_offset,
#                                          SymInt[] size, SymInt[] stride=[]) -> Tensor(a!)
def set_storage_offset(self: torch.Tensor, source: torch.UntypedStorage, storage_offset: int,
                       size: Sequence[int], stride: Sequence[int] = ()) -> torch.Tensor:
    if not stride:
        stride = contiguous_strides(size)
    return set_metadata(self, _zynq_storage(self, source), storage_offset, size, stride)


# aten::set_.source_Storage(Tensor(a!) self, Storage source) -> Tensor(a!)
def set_storage(self: torch.Tensor, source: torch.UntypedStorage) -> torch.Tensor:
    return set_metadata(self, _zynq_storage(self, source), 0, (source.nbytes() // self.element_size(),), (1,))


# aten::set_.source_Tensor(Tensor(a!) self, Tensor source) -> Tensor(a!)
def set_tensor(self: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    if source.dtype != self.dtype:
        raise RuntimeError(f"Could not set tensor of type {source.dtype} to a tensor of type {self.dtype}")
    return set_metadata(self, _zynq_storage(self, source.untyped_storage()), source.storage_offset(),
                        source.size(), source.stride())


# aten::set_(Tensor(a!) self) -> Tensor(a!)
def set_empty(self: torch.Tensor) -> torch.Tensor:
    return set_metadata(self, make_storage(get_allocator().allocate(0), self.device), 0, (0,), (1,))


KERNELS = {
    "empty.memory_format": empty_memory_format,
    "empty_strided": empty_strided,
    "_copy_from": copy_from,
    "_copy_from_and_resize": copy_from_and_resize,
    "resize_": resize_,
    "set_.source_Storage_storage_offset": set_storage_offset,
    "set_.source_Storage": set_storage,
    "set_.source_Tensor": set_tensor,
    "set_": set_empty,
}

# `_copy_from` must also be caught above the Conjugate and Negative fallbacks: they would resolve the bit
# with `clone`, whose `copy_` calls `_copy_from` again, forever. The CPU view carries the bits instead.
MATH_BIT_KERNELS = {"_copy_from": copy_from}
