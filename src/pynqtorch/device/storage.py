"""Zynq tensors as PrivateUse1 wrappers whose storage carries a host buffer.

A zynq tensor is a PrivateUse1 tensor whose storage points (without owning it) at a host buffer: a flat
uint8 CPU tensor from the allocator, kept alive by the storage's Python object. Every alias PyTorch makes
(views, `detach`, Parameters, gradients) shares the storage, so it shares the data; because the storage
has a real data pointer and size, storage-level Python code (`torch.save`, `data_ptr()`) works on it. The
CPU view of a zynq tensor is rebuilt from the tensor's *own* sizes, strides and offset on every use, so
metadata changed in C++ (views, `t_`, `as_strided_`, `out=` resizes) can never drift from the data.
Host buffers never move: growing a tensor gives it a new storage. Storages made in C++ (the native
fallback's results, `native.cpp`) own their memory instead; their host buffer is attached on first use, a
CPU tensor over the storage's own memory (`_attach`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from .allocator import get_allocator

HOST_ATTR = "_zynq_host"
BASES_ATTR = "_zynq_bases"  # per-dtype CPU tensors over the host buffer, the bases of CPU views
GEN_ATTR = "_zynq_gen"
_CPU = torch.device("cpu")
CPU_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)  # redispatch to CPU kernels (metadata only)
_set_cpu = torch.ops.aten.set_.source_Storage_storage_offset._handle.redispatch_boxed


def is_zynq(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "zynq"


def storage_host(st: torch.UntypedStorage) -> torch.Tensor:
    """The flat uint8 host buffer behind zynq storage `st`."""
    try:
        return getattr(st, HOST_ATTR)
    except AttributeError:
        return _attach(st)[0]


def _attach(st: torch.UntypedStorage) -> tuple[torch.Tensor, dict[torch.dtype, torch.Tensor]]:
    """Host buffer and CPU-view bases of a zynq storage made in C++, which owns its memory: the host buffer
    is a CPU tensor over that memory (not owning it: the storage, which holds the buffer, keeps it alive)."""
    if st.device.type != "zynq":
        raise RuntimeError(f"expected a zynq storage, got one on {st.device}")
    host = _host_bytes(st.data_ptr(), st.nbytes())
    bases: dict[torch.dtype, torch.Tensor] = {}
    setattr(st, HOST_ATTR, host)
    setattr(st, BASES_ATTR, bases)
    st.__deepcopy__ = _StorageCopy(host, st.device)
    return host, bases


def _host_bytes(ptr: int, nbytes: int) -> torch.Tensor:
    """A flat uint8 CPU tensor over memory a zynq storage made in C++ owns: the native runtime's, which a CPU `out=`
    kernel may grow into memory of its own as it grows a host buffer made here (`sync_from_cpu` adopts it)."""
    try:
        return torch.ops.pynqtorch_host.host_bytes(ptr, nbytes)
    except (AttributeError, RuntimeError):  # no native runtime: no storage made in C++ can grow
        return _bytes_of(torch._C._construct_storage_from_data_pointer(ptr, _CPU, nbytes))


def host_buffer(t: torch.Tensor) -> torch.Tensor:
    """The flat uint8 host buffer behind zynq tensor `t`."""
    return storage_host(t.untyped_storage())


class _StorageCopy:
    """`copy.deepcopy` hook of one zynq storage: a new storage holding a copy of its host buffer.

    `UntypedStorage.clone()` would allocate through PyTorch's PrivateUse1 allocator, which a pure-Python
    backend cannot provide; `copy.deepcopy` looks `__deepcopy__` up on the instance first, so this is used.
    """

    __slots__ = ("device", "host")

    def __init__(self, host: torch.Tensor, device: torch.device) -> None:
        self.host = host
        self.device = device

    def __call__(self, memo: dict) -> torch.UntypedStorage:
        fresh = get_allocator().allocate(self.host.numel())
        fresh.copy_(self.host)
        return make_storage(fresh, self.device)


def make_storage(host: torch.Tensor, device: torch.device, base: torch.Tensor | None = None) -> torch.UntypedStorage:
    """A zynq storage pointing at host buffer `host` (flat uint8, starting at its storage's first byte); `base`,
    a CPU tensor over the same memory, becomes the CPU-view base of its dtype."""
    st = torch._C._construct_storage_from_data_pointer(host.data_ptr(), device, host.numel())
    setattr(st, HOST_ATTR, host)
    setattr(st, BASES_ATTR, {} if base is None else {base.dtype: base})
    st.__deepcopy__ = _StorageCopy(host, device)
    return st


def mark_written(t: torch.Tensor) -> None:
    """Record that `t`'s memory was written (invalidates caches derived from it, e.g. quantized weights)."""
    st = t.untyped_storage()
    setattr(st, GEN_ATTR, getattr(st, GEN_ATTR, 0) + 1)


def write_generation(t: torch.Tensor) -> int:
    """A counter that changes whenever memory of `t`'s storage is written through the device."""
    return getattr(t.untyped_storage(), GEN_ATTR, 0)


def needed_bytes(size: Sequence[int], stride: Sequence[int], offset: int, itemsize: int) -> int:
    """Bytes of storage a tensor of this geometry reaches."""
    if any(s == 0 for s in size):
        return 0
    return (offset + 1 + sum((n - 1) * st for n, st in zip(size, stride))) * itemsize


def contiguous_strides(size: Sequence[int]) -> tuple[int, ...]:
    """Row-major strides of `size` (as PyTorch computes them: size-0/1 dims do not zero the others)."""
    strides = []
    acc = 1
    for n in reversed(size):
        strides.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(strides))


def cpu_view(t: torch.Tensor) -> torch.Tensor:
    """A CPU tensor aliasing `t`'s host memory with `t`'s sizes, strides, offset, dtype and conj/neg bits."""
    st = t.untyped_storage()
    try:
        bases = getattr(st, BASES_ATTR)
    except AttributeError:
        bases = _attach(st)[1]
    dtype = t.dtype
    base = bases.get(dtype)
    if base is None:
        host = storage_host(st)
        base = bases[dtype] = (host.view(dtype) if host.numel() % dtype.itemsize == 0
                               else torch.empty(0, dtype=dtype).set_(host.untyped_storage()))
    out = base.as_strided(t.size(), t.stride(), t.storage_offset())
    if t.is_conj():
        out = out.conj()
    if t.is_neg():
        out = torch._neg_view(out)
    return out


def set_metadata(t: torch.Tensor, storage: torch.UntypedStorage, offset: int, size: Sequence[int],
                 stride: Sequence[int]) -> torch.Tensor:
    """Point zynq tensor `t` at `storage` with the given geometry, without touching any data."""
    _set_cpu(CPU_KEYS, t, storage, offset, size, stride)
    return t


def _wrapper(dtype: torch.dtype) -> torch.Tensor:
    return torch._C._acc.create_empty_tensor((0,), dtype)


def new_tensor(size: Sequence[int], stride: Sequence[int] | None, dtype: torch.dtype,
               base: torch.Tensor | None = None) -> torch.Tensor:
    """A new zynq tensor with its own storage: over the memory of CPU tensor `base` (same dtype and geometry),
    adopted by the allocator (which may copy it), or over a fresh buffer."""
    alloc = get_allocator()
    offset = 0
    if base is None:
        if stride is None:
            stride = contiguous_strides(size)
        host = alloc.allocate(needed_bytes(size, stride, 0, dtype.itemsize))
    else:
        given = _bytes_of(base.untyped_storage())
        host = alloc.adopt(given)
        offset = base.storage_offset()
        if host is not given:  # copied: `base` is not this tensor's memory
            base = None
    t = _wrapper(dtype)
    return set_metadata(t, make_storage(host, t.device, base), offset, size, stride)


def _mode_of(base: torch.Tensor) -> contextlib.AbstractContextManager:
    """Inference mode as `base` has it, so a view of `base` is an inference tensor exactly when `base` is one:
    autograd sets a view's version counter, which an inference tensor made for a normal base refuses."""
    if base.is_inference() != torch.is_inference_mode_enabled():
        return torch.inference_mode(base.is_inference())
    return contextlib.nullcontext()


def alias(base: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A zynq tensor sharing `base`'s storage with `like`'s (a CPU view of it) dtype, geometry and conj/neg bits."""
    with _mode_of(base):
        t = set_metadata(_wrapper(like.dtype), base.untyped_storage(), like.storage_offset(), like.size(),
                         like.stride())
        if like.is_conj():
            t = t.conj()
        if like.is_neg():
            t = torch._neg_view(t)
        return t


def _bytes_of(st: torch.UntypedStorage) -> torch.Tensor:
    """A flat uint8 CPU tensor over all of CPU storage `st`."""
    return torch.empty(0, dtype=torch.uint8).set_(st)


# `adopt_result` in C++ (``pynqtorch_host::adopt_result``), while the native fallback serves (`native.sync`).
_native_adopt: list[Callable[[torch.Tensor], torch.Tensor] | None] = [None]


def native_adopt(fn: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
    """Let `adopt_result` run `fn` (the native runtime's form, which accounts the memory as the native fallback's
    results; None: the Python host allocator adopts every result)."""
    _native_adopt[0] = fn


def adopt_result(x: torch.Tensor) -> torch.Tensor:
    """A new zynq tensor holding `x`, a fresh CPU result nobody else holds: its memory is taken over, not copied.
    In Python `x` itself becomes the storage's CPU-view base, so the tensor's first use builds none; natively
    (`native_adopt`) it is made as the native fallback makes its results."""
    fn = _native_adopt[0]
    if fn is not None:
        return fn(x)
    if x.is_conj() or x.is_neg():
        x = x.resolve_conj().resolve_neg()
    return new_tensor(x.size(), x.stride(), x.dtype, base=x)


def resize(t: torch.Tensor, size: Sequence[int], stride: Sequence[int] | None = None) -> torch.Tensor:
    """`t.resize_(size)` for zynq tensors: `stride` (default contiguous), host buffer grown (keeping data) if
    needed."""
    size = tuple(size)
    stride = contiguous_strides(size) if stride is None else tuple(stride)
    need = needed_bytes(size, stride, t.storage_offset(), t.element_size())
    host = host_buffer(t)
    st = t.untyped_storage()
    if need > host.numel():
        grown = get_allocator().allocate(need)
        grown[: host.numel()].copy_(host)
        st = make_storage(grown, t.device)
    return set_metadata(t, st, t.storage_offset(), size, stride)


def sync_from_cpu(t: torch.Tensor, c: torch.Tensor) -> None:
    """Carry geometry changes that an op made on `c` (the CPU view of zynq tensor `t`) back to `t`.

    A CPU `out=` kernel may resize `c`, reallocating the host buffer's memory: `t` then gets a new storage
    over the grown memory (the allocator adopts it, or copies it if it needs device-visible memory).
    """
    st = t.untyped_storage()
    cst = c.untyped_storage()
    if cst.data_ptr() != st.data_ptr():
        st = make_storage(get_allocator().adopt(_bytes_of(cst)), t.device)
    elif c.size() == t.size() and c.stride() == t.stride() and c.storage_offset() == t.storage_offset():
        return
    set_metadata(t, st, c.storage_offset(), c.size(), c.stride())
