"""Host memory behind zynq tensors, behind one small interface (`set_allocator`) that can be replaced.

Every zynq storage owns one flat `uint8` CPU tensor (its *host buffer*). The allocator takes it from the
CPU allocator; no target replaces it today (the board target copies each tile into its own pooled
`pynq.allocate` buffers). Statistics (bytes live, peak, count) are kept here for
`torch.zynq.memory_allocated()` and friends, together with the memory the native CPU fallback adopts
(`external`, set on the default allocator by `native.py`).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable
from typing import Protocol

import torch


class ExternalMemory(Protocol):
    """Memory an allocator's statistics include besides its own buffers (the native fallback's)."""

    def stats(self, own_delta: int = 0, reset_peak: bool = False) -> tuple[int, int, int]:
        """(bytes, storages, peak of those plus the allocator's own bytes); `own_delta` reports a change of the
        allocator's own bytes first, `reset_peak` sets the peak to the current total."""
        ...


class HostAllocator:
    """Allocate host buffers for zynq storages (plain CPU memory; subclass for device-visible memory)."""

    name = "cpu"

    def __init__(self) -> None:
        # reentrant: a buffer freed by the garbage collector while the lock is held (any allocation inside
        # `_account` may run a collection) releases itself through its weakref callback on this thread
        self._lock = threading.RLock()
        # token -> (weak reference to the buffer, its accounted size), until the buffer is collected; tokens,
        # not the references, are the keys (comparing references would compare the tensors).
        self._live: dict[int, tuple[weakref.ref, int]] = {}
        self._tokens = itertools.count()
        self._allocated = 0
        self._peak = 0
        self._count = 0
        self.external: ExternalMemory | None = None

    @property
    def allocated(self) -> int:
        """Bytes held by live host buffers (and external memory)."""
        return self._allocated + (self.external.stats()[0] if self.external else 0)

    @property
    def count(self) -> int:
        """Live host buffers (and external storages)."""
        return self._count + (self.external.stats()[1] if self.external else 0)

    @property
    def peak(self) -> int:
        """Peak of `allocated` since creation or the last `reset_peak()`."""
        return max(self._peak, self.external.stats()[2]) if self.external else self._peak

    def _new(self, nbytes: int) -> torch.Tensor:
        """A fresh uint8 CPU tensor of `nbytes` bytes; override to use device-visible memory."""
        return torch.empty(nbytes, dtype=torch.uint8)

    def accepts(self, buf: torch.Tensor) -> bool:
        """Whether an existing CPU buffer may become a host buffer without a copy."""
        return True

    def allocate(self, nbytes: int) -> torch.Tensor:
        """A host buffer of `nbytes` bytes, accounted until it is garbage collected."""
        return self._account(self._new(nbytes))

    def adopt(self, buf: torch.Tensor) -> torch.Tensor:
        """Turn a flat uint8 CPU tensor into a host buffer: reused if `accepts` it, copied otherwise."""
        if not self.accepts(buf):
            fresh = self._new(buf.numel())
            fresh.copy_(buf)
            buf = fresh
        return self._account(buf)

    def _account(self, buf: torch.Tensor) -> torch.Tensor:
        if (buf.dtype is not torch.uint8 or buf.device.type != "cpu" or buf.dim() != 1 or buf.storage_offset()
                or buf.stride(0) != 1):
            raise ValueError(f"{type(self).__name__}: a host buffer must be a flat contiguous uint8 CPU tensor "
                             f"starting at its storage's first byte, got {buf.dtype} {tuple(buf.shape)} on "
                             f"{buf.device} at offset {buf.storage_offset()}")
        n = buf.numel()
        token = next(self._tokens)
        # Made before the lock is taken (creating a container can start a collection, see `__init__`).
        entry = (weakref.ref(buf, lambda _, token=token: self._release(token)), n)
        with self._lock:
            self._live[token] = entry
            self._allocated += n
            self._count += 1
            self._peak = max(self._peak, self._allocated)
        if self.external:  # outside the lock: the call may run the garbage collector, hence `_release`
            self.external.stats(n)
        return buf

    def _release(self, token: int) -> None:
        with self._lock:
            n = self._live.pop(token)[1]
            self._allocated -= n
            self._count -= 1
        if self.external:
            self.external.stats(-n)

    def reset_peak(self) -> None:
        with self._lock:
            self._peak = self._allocated
        if self.external:
            self.external.stats(reset_peak=True)


_allocator: HostAllocator = HostAllocator()
DEFAULT = _allocator
_watchers: list[Callable[[], None]] = []


def watch(fn: Callable[[], None]) -> None:
    """Call `fn` after every `set_allocator`."""
    _watchers.append(fn)


def get_allocator() -> HostAllocator:
    """The allocator new zynq storages draw from."""
    return _allocator


def set_allocator(allocator: HostAllocator) -> HostAllocator:
    """Install `allocator` for new storages (existing tensors keep their buffers); returns the previous one."""
    global _allocator
    previous, _allocator = _allocator, allocator
    for fn in _watchers:
        fn()
    return previous
