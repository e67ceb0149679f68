"""Host memory behind zynq tensors, behind one small interface (`set_allocator`) that can be replaced.

Every zynq storage owns one flat `uint8` CPU tensor (its *host buffer*). The allocator takes it from the
CPU allocator; no target replaces it today (the board target copies each tile into its own pooled
`pynq.allocate` buffers). Statistics (bytes live, peak, count) are kept here for
`torch.zynq.memory_allocated()` and friends.
"""

from __future__ import annotations

import itertools
import threading
import weakref

import torch


class HostAllocator:
    """Allocate host buffers for zynq storages (plain CPU memory; subclass for device-visible memory)."""

    name = "cpu"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # token -> (weak reference to the buffer, its accounted size), until the buffer is collected; tokens,
        # not the references, are the keys (comparing references would compare the tensors).
        self._live: dict[int, tuple[weakref.ref, int]] = {}
        self._tokens = itertools.count()
        self.allocated = 0
        self.peak = 0
        self.count = 0

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
        with self._lock:
            self._live[token] = (weakref.ref(buf, lambda _, token=token: self._release(token)), n)
            self.allocated += n
            self.count += 1
            self.peak = max(self.peak, self.allocated)
        return buf

    def _release(self, token: int) -> None:
        with self._lock:
            self.allocated -= self._live.pop(token)[1]
            self.count -= 1

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = self.allocated


_allocator: HostAllocator = HostAllocator()


def get_allocator() -> HostAllocator:
    """The allocator new zynq storages draw from."""
    return _allocator


def set_allocator(allocator: HostAllocator) -> HostAllocator:
    """Install `allocator` for new storages (existing tensors keep their buffers); returns the previous one."""
    global _allocator
    previous, _allocator = _allocator, allocator
    return previous
