"""Contiguous buffer memory of the virtual board: a physical address space that buffers are carved from.

Mirrors what the PYNQ.remote buffer service does on a board (CMA allocations with a physical address the
fabric reaches over HP ports), and counts live buffers so tests can prove a client frees what it takes.
"""

from __future__ import annotations

import bisect
import itertools
import secrets
import threading
from dataclasses import dataclass

import numpy as np

# PYNQ-Z2: 512 MiB DDR at 0x0; the CMA pool sits high in it.
CMA_BASE = 0x1600_0000
CMA_SIZE = 0x0800_0000
PAGE = 4096


class MemoryFault(RuntimeError):
    """An access outside every live buffer (what would be a bus error or silent corruption on hardware)."""


@dataclass
class Buffer:
    buffer_id: str
    address: int
    data: np.ndarray  # uint8, the buffer's bytes
    dtype: str

    @property
    def size(self) -> int:
        return self.data.size


class BufferMemory:
    """Allocates page-aligned buffers first-fit in ``[base, base + size)`` and resolves physical accesses."""

    def __init__(self, base: int = CMA_BASE, size: int = CMA_SIZE) -> None:
        self.base = base
        self.size = size
        self._by_id: dict[str, Buffer] = {}
        self._starts: list[int] = []  # sorted start addresses of live buffers
        self._by_start: dict[int, Buffer] = {}
        self._ids = itertools.count(1)
        # Ids unique to this memory: a client left over from an earlier server on the same port cannot
        # free (or write) a buffer of this one by a recycled id.
        self._prefix = secrets.token_hex(4)
        self._lock = threading.Lock()
        self.allocations = 0
        self.writes = 0  # host-to-board buffer writes (one per write RPC) and their bytes
        self.bytes_written = 0

    def allocate(self, size: int, dtype: str) -> Buffer:
        if size <= 0:
            raise ValueError(f"buffer size must be positive, got {size}")
        span = -(-size // PAGE) * PAGE
        with self._lock:
            address = self.base
            for start in self._starts:
                if start - address >= span:
                    break
                address = start + -(-self._by_start[start].size // PAGE) * PAGE
            if address + span > self.base + self.size:
                raise MemoryError(f"out of contiguous memory: {size} bytes requested, "
                                  f"{len(self._by_id)} buffers live in a {self.size >> 20} MiB pool")
            buf = Buffer(f"{self._prefix}-buf{next(self._ids)}", address, np.zeros(size, np.uint8), dtype)
            bisect.insort(self._starts, address)
            self._by_start[address] = buf
            self._by_id[buf.buffer_id] = buf
            self.allocations += 1
            return buf

    def get(self, buffer_id: str) -> Buffer:
        try:
            return self._by_id[buffer_id]
        except KeyError:
            raise KeyError(f"no live buffer {buffer_id!r}") from None

    def free(self, buffer_id: str) -> None:
        with self._lock:
            buf = self.get(buffer_id)
            del self._by_id[buffer_id]
            del self._by_start[buf.address]
            self._starts.remove(buf.address)

    def free_all(self) -> None:
        with self._lock:
            self._by_id.clear()
            self._by_start.clear()
            self._starts.clear()

    def record_write(self, nbytes: int) -> None:
        with self._lock:
            self.writes += 1
            self.bytes_written += nbytes

    @property
    def live(self) -> int:
        """Number of buffers allocated and not yet freed."""
        return len(self._by_id)

    def view(self, address: int, nbytes: int) -> np.ndarray:
        """The uint8 bytes ``[address, address + nbytes)``, which must lie inside one live buffer."""
        with self._lock:
            i = bisect.bisect_right(self._starts, address) - 1
            buf = self._by_start[self._starts[i]] if i >= 0 else None
        if buf is None or address + nbytes > buf.address + buf.size:
            raise MemoryFault(f"access to 0x{address:08x}..0x{address + nbytes:08x} is outside every live buffer")
        off = address - buf.address
        return buf.data[off:off + nbytes]
