"""Zynq tensors as PrivateUse1 wrappers whose storage carries a host buffer.

A zynq tensor is a PrivateUse1 tensor whose storage holds no bytes of its own; the storage's Python object
carries the host buffer (a flat uint8 CPU tensor from the allocator). Every alias PyTorch makes (views,
`detach`, Parameters, gradients) shares the storage, so it shares the data. The CPU view of a zynq tensor
is rebuilt from the tensor's *own* sizes, strides and offset on every use, so metadata changed in C++
(views, `t_`, `as_strided_`, `out=` resizes) can never drift from the data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .allocator import get_allocator

HOST_ATTR = "_zynq_host"
GEN_ATTR = "_zynq_gen"
_META = torch._C.DispatchKeySet(torch._C.DispatchKey.Meta)
_set_meta = torch.ops.aten.set_.source_Storage_storage_offset.redispatch


def is_zynq(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "zynq"


def host_buffer(t: torch.Tensor) -> torch.Tensor:
    """The flat uint8 host buffer behind zynq tensor `t`."""
    try:
        return getattr(t.untyped_storage(), HOST_ATTR)
    except AttributeError:
        raise RuntimeError("zynq tensor has no host memory (was it created outside pynqtorch?)") from None


def mark_written(t: torch.Tensor) -> None:
    """Record that `t`'s memory was written (invalidates caches derived from it, e.g. quantized weights)."""
    st = t.untyped_storage()
    setattr(st, GEN_ATTR, getattr(st, GEN_ATTR, 0) + 1)


def write_generation(t: torch.Tensor) -> int:
    """A counter that changes whenever memory of `t`'s storage is written through the device."""
    return getattr(t.untyped_storage(), GEN_ATTR, 0)


def _needed_bytes(size: Sequence[int], stride: Sequence[int], offset: int, itemsize: int) -> int:
    if any(s == 0 for s in size):
        return 0
    return (offset + 1 + sum((n - 1) * st for n, st in zip(size, stride))) * itemsize


def cpu_view(t: torch.Tensor) -> torch.Tensor:
    """A CPU tensor aliasing `t`'s host memory with `t`'s sizes, strides, offset, dtype and conj/neg bits."""
    host = host_buffer(t)
    out = torch.empty((), dtype=t.dtype).set_(host.untyped_storage(), t.storage_offset(), t.size(), t.stride())
    if t.is_conj():
        out = out.conj()
    if t.is_neg():
        out = torch._neg_view(out)
    return out


def set_metadata(t: torch.Tensor, storage: torch.UntypedStorage, offset: int, size: Sequence[int],
                 stride: Sequence[int]) -> torch.Tensor:
    """Point zynq tensor `t` at `storage` with the given geometry, without touching any data."""
    _set_meta(_META, t, storage, offset, size, stride)
    return t


def _wrapper(dtype: torch.dtype) -> torch.Tensor:
    return torch._C._acc.create_empty_tensor((0,), dtype)


def attach(t: torch.Tensor, host: torch.Tensor) -> None:
    """Make `host` the host buffer of `t`'s storage."""
    setattr(t.untyped_storage(), HOST_ATTR, host)


def new_tensor(size: Sequence[int], stride: Sequence[int] | None, dtype: torch.dtype,
               host: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
    """A new zynq tensor with its own storage; `host` (flat uint8) is adopted or a fresh buffer allocated."""
    size = tuple(size)
    if stride is None:
        stride = torch.empty(size, device="meta").stride() if size else ()
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = _needed_bytes(size, stride, offset, itemsize)
    alloc = get_allocator()
    host = alloc.allocate(nbytes) if host is None else alloc.adopt(host)
    t = _wrapper(dtype)
    set_metadata(t, t.untyped_storage(), offset, size, stride)
    attach(t, host)
    return t


def alias(base: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A zynq tensor sharing `base`'s storage with `like`'s (a CPU view of it) dtype and geometry."""
    t = _wrapper(like.dtype)
    set_metadata(t, base.untyped_storage(), like.storage_offset(), like.size(), like.stride())
    if like.is_conj():
        t = t.conj()
    if like.is_neg():
        t = torch._neg_view(t)
    return t


def adopt_result(x: torch.Tensor) -> torch.Tensor:
    """A new zynq tensor holding `x`, a fresh CPU result nobody else holds: its memory is taken over, not copied."""
    if x.is_conj() or x.is_neg():
        x = x.resolve_conj().resolve_neg()
    st = x.untyped_storage()
    host = torch.empty(0, dtype=torch.uint8).set_(st, 0, (st.nbytes(),), (1,))
    return new_tensor(x.size(), x.stride(), x.dtype, host=host, offset=x.storage_offset())


def resize(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """`t.resize_(size)` for zynq tensors: contiguous strides, host buffer grown (keeping data) if needed."""
    size = tuple(size)
    stride = torch.empty(size, device="meta").stride() if size else ()
    need = _needed_bytes(size, stride, t.storage_offset(), t.element_size())
    host = host_buffer(t)
    if need > host.numel():
        grown = get_allocator().allocate(need)
        grown[: host.numel()].copy_(host)
        attach(t, grown)
    return set_metadata(t, t.untyped_storage(), t.storage_offset(), size, stride)
