"""The host allocator's accounting survives the garbage collector freeing a buffer while its lock is held."""

from __future__ import annotations

import gc

from pynqtorch.device.allocator import HostAllocator


def test_buffers_freed_by_a_collection_inside_the_lock_release_themselves() -> None:
    alloc = HostAllocator()
    old = gc.get_threshold()
    gc.set_threshold(1)  # a collection at (almost) every allocation, inside `_account` too
    try:
        for _ in range(300):
            cycle: list = [alloc.allocate(16)]
            cycle.append(cycle)  # only the collector frees this buffer
        del cycle
        gc.collect()
    finally:
        gc.set_threshold(*old)
    assert alloc.count == 0 and alloc.allocated == 0 and alloc.peak >= 16
