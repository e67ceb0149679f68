"""Weight tiles resident on a board: packed B operands kept in board buffers, found again by a stable key.

The engine names each tile of a cached weight by a key that changes whenever the weight does (a serial
number of the prepared weight, never reused, plus the tile's position); the unit adds how the kernel packs
B. A second call with the same key finds the words already on the board and transfers nothing. Entries
are bounded by a byte budget (`PYNQTORCH_BOARD_WEIGHT_CACHE_MB`, default 64 MiB: CMA on a PYNQ-Z2 is small)
and evicted least recently used; an entry a running call uses is pinned and never freed under it. Tiles
larger than the budget, or arriving when everything is pinned, simply take the per-call path.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .connection import free_buffers

WEIGHT_CACHE_ENV = "PYNQTORCH_BOARD_WEIGHT_CACHE_MB"
DEFAULT_WEIGHT_CACHE_MB = 64.0

log = logging.getLogger(__name__)


def weight_cache_budget() -> int:
    """Bytes of board memory resident weights may use, from `PYNQTORCH_BOARD_WEIGHT_CACHE_MB` (0 disables)."""
    text = os.environ.get(WEIGHT_CACHE_ENV, "").strip()
    if not text:
        return int(DEFAULT_WEIGHT_CACHE_MB * 2**20)
    try:
        mb = float(text)
    except ValueError:
        raise ValueError(f"{WEIGHT_CACHE_ENV}={text!r} is not a number of MiB") from None
    if not mb >= 0:
        raise ValueError(f"{WEIGHT_CACHE_ENV}={text!r} must be >= 0")
    return int(mb * 2**20)


@dataclass(eq=False)
class _Entry:
    nbytes: int = 0
    buf: Any = None
    pins: int = 1
    ready: threading.Event = field(default_factory=threading.Event)
    failed: bool = False


@dataclass
class WeightStats:
    hits: int = 0
    uploads: int = 0
    evictions: int = 0
    skipped: int = 0  # tiles that took the per-call path (too large, or no room)


class ResidentWeights:
    """Packed weight tiles in board buffers by key, LRU within `budget` bytes; see the module docstring."""

    def __init__(self, allocate: Callable[[int, np.dtype], Any], budget: int) -> None:
        self._allocate = allocate
        self.budget = budget
        self.used = 0
        self.stats = WeightStats()
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, key: Hashable, words: Callable[[], np.ndarray]) -> Any | None:
        """A board buffer holding the words of tile `key` (pinned until `release(key)`), else None.

        `words()` packs the tile; it runs only when the tile is not resident yet (once, however many
        callers ask for it at the same time: the others wait for that upload).
        """
        if self.budget <= 0:
            return None
        with self._lock:
            entry = self._entries.get(key)
            created = entry is None
            if created:
                entry = self._entries[key] = _Entry()
            else:
                entry.pins += 1
                self._entries.move_to_end(key)
        if created:
            return self._upload(key, entry, words)
        entry.ready.wait()
        with self._lock:
            if entry.failed:
                entry.pins -= 1
                return None
            self.stats.hits += 1
        return entry.buf

    def _upload(self, key: Hashable, entry: _Entry, words: Callable[[], np.ndarray]) -> Any | None:
        victims: list[Any] = []
        try:
            w = words()
            with self._lock:
                room = w.nbytes <= self.budget and self._make_room(w.nbytes, victims)
                if room:
                    entry.nbytes = w.nbytes
                    self.used += w.nbytes
            left, err = free_buffers(victims)
            if err is not None:
                log.warning("evicting resident weights: %d buffer(s) not freed (board gone?): %s", left, err)
            if not room:
                with self._lock:
                    self.stats.skipped += 1
                self._fail(key, entry)
                return None
            buf = self._allocate(w.size, w.dtype)
            buf[:] = w
            buf.flush()
        except BaseException:
            self._fail(key, entry)
            raise
        entry.buf = buf
        with self._lock:
            self.stats.uploads += 1
        entry.ready.set()
        return buf

    def _make_room(self, nbytes: int, victims: list[Any]) -> bool:
        """Evict unpinned entries, oldest first, until `nbytes` fit (lock held); False if they cannot."""
        evictable = [(k, e) for k, e in self._entries.items() if e.pins == 0 and e.buf is not None]
        if self.used - sum(e.nbytes for _, e in evictable) + nbytes > self.budget:
            return False
        for k, e in evictable:
            if self.used + nbytes <= self.budget:
                break
            del self._entries[k]
            self.used -= e.nbytes
            self.stats.evictions += 1
            victims.append(e.buf)
        return self.used + nbytes <= self.budget

    def _fail(self, key: Hashable, entry: _Entry) -> None:
        with self._lock:
            entry.failed = True
            if self._entries.get(key) is entry:
                del self._entries[key]
            self.used -= entry.nbytes
            entry.pins -= 1
        entry.ready.set()

    def release(self, key: Hashable) -> None:
        """Unpin tile `key` after the call that used it finished (or was abandoned)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.pins -= 1

    def close(self) -> tuple[int, Exception | None]:
        """Free every resident buffer (`free_buffers`' result: a board that is gone keeps nothing to free)."""
        with self._lock:
            bufs = [e.buf for e in self._entries.values() if e.buf is not None]
            self._entries.clear()
            self.used = 0
        return free_buffers(bufs)

    @property
    def resident(self) -> int:
        """Number of tiles on the board."""
        with self._lock:
            return sum(e.buf is not None for e in self._entries.values())
