"""Tiling and scheduling of int8 GEMMs over the compute units of the active target.

A GEMM ``[B, M, K] @ [B, K, N]`` is cut into calls by `hw.tiling.blocks` (shared with the cycle model):
each dimension into blocks of the largest multiple of the kernel tile the target takes per call (K further
limited so the accumulator cannot overflow). Only blocks at the far edge of a dimension are shorter than
the call and get zero padding (output cropped), unless every unit takes any shape (`ComputeUnit.any_shape`,
the large-call golden model).
On units taking stacks (the large-call golden model) a GEMM whose N and K fit one call runs as one stacked
product in the caller's thread whatever its M and batch, counted as the calls of its M blocks (`Scheduler._stack`).
Other calls are spread round-robin over all units by a persistent pool with two workers per unit: while one holds
the unit, the other prepares its next call (slice, pad, make contiguous) and collects its previous result
(K partial results summed in a cache-resident int64 buffer, stored once per output block) — double
buffering without hand-off queues. Small GEMMs on units that compute on the host anyway (`ComputeUnit.exact`) run
their calls in the caller's thread instead (`INLINE_WORK`).
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
import weakref
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch

from ..hw.tiling import blocks, pack_factor
from ..targets.base import ComputeUnit
from ..targets.registry import ActiveTarget
from .limbs import digit_bits
from .stats import STATS

_SLOTS = 2  # pipeline depth per unit
# Largest GEMM volume (B·M·N·K) whose calls on exact units (`ComputeUnit.exact`: the golden model on the host) run
# in the caller's thread one after another rather than on the pool: below it, waking the workers costs more than
# the calls (a few tens of µs against ~1 µs per 20k multiply-adds).
INLINE_WORK = 1 << 21


class Task(NamedTuple):
    """One kernel call: batch index and (start, size, call size) per dimension; `out_block` numbers the
    output block it adds into."""

    batch: int
    m: tuple[int, int, int]
    n: tuple[int, int, int]
    k: tuple[int, int, int]
    out_block: int


def _block(src: np.ndarray, r: tuple[int, int, int], c: tuple[int, int, int], pad: bool = True) -> np.ndarray:
    """The (rows `r`, columns `c`) block of `src`, C-contiguous, zero-padded to the call size if `pad`."""
    view = src[r[0]:r[0] + r[1], c[0]:c[0] + c[1]]
    if not pad or (r[1] == r[2] and c[1] == c[2]):
        return np.ascontiguousarray(view)
    buf = np.zeros((r[2], c[2]), np.int8)
    buf[:r[1], :c[1]] = view
    return buf


def _tile_key(b_key: Hashable | None, t: Task) -> Hashable | None:
    """A stable name for the B block of `t` when B is a cached weight named `b_key` (see `Scheduler.gemm`)."""
    return None if b_key is None else (b_key, t.batch, t.k, t.n)


class _Job:
    """One GEMM being executed: its work items, per-unit cursors, the output and per-block locks.

    An item is either all K calls of one output block in order (*exclusive*: summed in a cache-resident
    buffer, stored once) or a single call added into the output under the block's lock (used when there
    are too few output blocks to keep every worker busy).
    """

    def __init__(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, items: list[list[Task]], exclusive: bool,
                 n_blocks: int, tile: tuple[int, int, int], units: int, first: int,
                 b_key: Hashable | None = None, pad: bool = True) -> None:
        self.a, self.b, self.out, self.items, self.tile = a, b, out, items, tile
        self.b_key = b_key
        self.exclusive = exclusive
        self.pad = pad
        # Item i goes to unit (first + i) % units: a deterministic spread over identical units, rotated from
        # call to call; the two slots of a unit share its cursor.
        self._cursors = [itertools.count((u - first) % units, units) for u in range(units)]
        self._locks = [threading.Lock() for _ in range(min(n_blocks, 64))]
        self._written = bytearray(n_blocks)
        self.failed = False

    def take(self, unit: int) -> list[Task] | None:
        i = next(self._cursors[unit])
        return None if self.failed or i >= len(self.items) else self.items[i]

    def prepare(self, t: Task) -> tuple[np.ndarray, np.ndarray]:
        return _block(self.a[t.batch], t.m, t.k, self.pad), _block(self.b[t.batch], t.k, t.n, self.pad)

    def _dst(self, t: Task) -> np.ndarray:
        return self.out[t.batch, t.m[0]:t.m[0] + t.m[1], t.n[0]:t.n[0] + t.n[1]]

    def accumulate(self, t: Task, res: np.ndarray, acc: np.ndarray | None) -> np.ndarray | None:
        """Fold one call's result in: into the local sum of an exclusive item, else into the output."""
        src = res[:t.m[1], :t.n[1]]
        if self.exclusive:
            if acc is None:
                return np.array(src, self.out.dtype)  # a copy: the unit may reuse its result buffer
            acc += src
            return acc
        with self._locks[t.out_block % len(self._locks)]:
            if self._written[t.out_block]:
                self._dst(t)[...] += src
            else:
                self._dst(t)[...] = src
                self._written[t.out_block] = 1
        return None

    def store(self, t: Task, acc: np.ndarray | None) -> None:
        if self.exclusive and acc is not None:
            self._dst(t)[...] = acc

    def tiles(self, t: Task) -> int:
        return (t.m[2] // self.tile[0]) * (t.n[2] // self.tile[1]) * (t.k[2] // self.tile[2])


class Scheduler:
    """Persistent workers for one active target (two per compute unit)."""

    def __init__(self, active: ActiveTarget) -> None:
        self.active = active
        self.units = active.units
        self._unit_locks = [threading.Lock() for _ in self.units]
        self._pool = ThreadPoolExecutor(_SLOTS * len(self.units), thread_name_prefix=f"pynqtorch-{active.name}")
        self._next_unit = itertools.count()
        # Units that keep B tiles resident when told a stable key for them (the board target).
        self._keyed = [u.resident_b for u in self.units]
        # Edge calls are zero-padded to the kernel's call size unless every unit takes any shape.
        self._pad = not all(u.any_shape for u in self.units)
        # A batch of one-call GEMMs goes to one unit at once when every unit takes stacks (the golden model).
        self._stacks = all(u.stacks for u in self.units)
        # Every unit's call is the exact integer product (`ComputeUnit.exact`): the engine may compute small
        # products itself and account them with `host_call`.
        self.exact = all(u.exact for u in self.units)
        arith = active.desc.arith
        self._tile = (active.desc.tile.m, active.desc.tile.n, active.desc.tile.k)
        # Digit width for exact limbs and the symmetric quantization range of this kernel.
        self.digit_bits = digit_bits(arith, active.desc.tile.k)
        self.qmax = (1 << (min(arith.operand_bits, 8) - 1)) - 1
        # What the engine derives from a prepared weight for this target's units (its native rows pass), per weight.
        self.derived: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def gemm(self, a: torch.Tensor, b: torch.Tensor, k_call: int, b_key: Hashable | None = None,
             narrow: bool = False, pack: bool = True) -> torch.Tensor:
        """Exact ``a @ b`` for int8 ``a`` ``[B, M, K]`` and ``b`` ``[B, K, N]``; `k_call` caps K per call.

        The result is int64, or the unit's int32 accumulator when the whole GEMM is one call. `narrow`
        says every sum over K provably fits int32: K partial results are then summed in int32.
        `b_key`: a hashable that names `b`'s contents for as long as they exist unchanged (a cached weight);
        units that keep operands on their device get it, extended by the tile's position, with each call.
        A batch of small products (a grouped convolution's groups) shares calls when `pack` allows
        (`_packed`); units taking stacks get all one-call products of a batch at once.
        """
        bt, m, k = a.shape
        n = b.shape[2]
        if k == 0 or m == 0 or n == 0 or bt == 0:
            return torch.zeros((bt, m, n), dtype=torch.int64)
        t0 = time.perf_counter()
        tile, lim = self._tile, self.active.limits
        one_call = m <= lim.m and n <= lim.n and k <= min(lim.k, k_call)
        if self._stacks and n <= lim.n and k <= min(lim.k, k_call):  # one call, or M blocks of one each
            return self._stack(a, b, t0, self.stack_calls(m))
        p = (pack_factor(bt, n, k, tile[1], tile[2], lim.n, min(lim.k, k_call)) if pack and not self._stacks
             else 1)
        if p > 1:
            return self._packed(a, b, p, k_call, b_key, narrow)
        if one_call and bt == 1:
            task = Task(0, (0, m, -(-m // tile[0]) * tile[0]), (0, n, -(-n // tile[1]) * tile[1]),
                        (0, k, -(-k // tile[2]) * tile[2]), 0)
            return self._single(a.numpy()[0], b.numpy()[0], task, _tile_key(b_key, task), t0)
        mb, nb = blocks(m, tile[0], lim.m), blocks(n, tile[1], lim.n)
        kb = blocks(k, tile[2], min(lim.k, k_call))
        tasks = [Task(i, bm, bn, bk, (i * len(mb) + x) * len(nb) + y)
                 for i in range(bt) for x, bm in enumerate(mb) for y, bn in enumerate(nb) for bk in kb]
        out = torch.empty((bt, m, n), dtype=torch.int32 if narrow else torch.int64)
        first = next(self._next_unit) % len(self.units)
        n_blocks = bt * len(mb) * len(nb)
        exclusive = n_blocks >= _SLOTS * len(self.units)
        items = ([tasks[i:i + len(kb)] for i in range(0, len(tasks), len(kb))] if exclusive
                 else [[t] for t in tasks])
        job = _Job(a.numpy(), b.numpy(), out.numpy(), items, exclusive, n_blocks, tile, len(self.units), first,
                   b_key, self._pad)
        if len(items) == 1:
            self._work(job, first)
        elif self.exact and bt * m * n * k <= INLINE_WORK:  # the hand-off to the pool would cost more
            for i in range(min(len(self.units), len(items))):
                self._work(job, (first + i) % len(self.units))
        else:
            busy = [(first + i) % len(self.units) for i in range(min(len(self.units), len(items)))]
            futures = [self._pool.submit(self._work, job, u) for u in busy for _ in range(_SLOTS)]
            errors = [f.exception() for f in futures]
            err = next((e for e in errors if e is not None), None)
            if err is not None:
                raise err
        STATS.phase("schedule_wall", time.perf_counter() - t0)
        STATS.count("kernel_calls", len(tasks))
        return out

    def _run(self, u: int, a: np.ndarray, b: np.ndarray, key: Hashable | None) -> np.ndarray:
        unit = self.units[u]
        return unit.run(a, b, b_key=key) if key is not None and self._keyed[u] else unit.run(a, b)

    def _single(self, a: np.ndarray, b: np.ndarray, task: Task, key: Hashable | None,
                start: float) -> torch.Tensor:
        """The GEMM as one call (padded if needed), run in the caller's thread; unpadded, no output copy.
        Returns ``[1, M, N]``."""
        u = next(self._next_unit) % len(self.units)
        padded = task.m[1] != task.m[2] or task.n[1] != task.n[2] or task.k[1] != task.k[2]
        t0 = time.perf_counter()
        crop = padded and self._pad
        if crop:
            a, b = _block(a, task.m, task.k), _block(b, task.k, task.n)
        else:
            a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        with self._unit_locks[u]:
            t1 = time.perf_counter()
            res = self._run(u, a, b, key)
            t2 = time.perf_counter()
        if crop:
            res = np.ascontiguousarray(res[:task.m[1], :task.n[1]])
        tile = self._tile
        tiles = (task.m[2] // tile[0]) * (task.n[2] // tile[1]) * (task.k[2] // tile[2])
        out = torch.from_numpy((res if res.flags.writeable else res.copy())[None])
        t3 = time.perf_counter()
        STATS.record({"prepare": t1 - t0, "run": t2 - t1, "collect": t3 - t2, "schedule_wall": t3 - start},
                     {"kernel_calls": 1}, (self.units[u].name, 1, tiles, int(padded), t2 - t1))
        return out

    def _packed(self, a: torch.Tensor, b: torch.Tensor, p: int, k_call: int, b_key: Hashable | None,
                narrow: bool) -> torch.Tensor:
        """Products ``a[i] @ b[i]`` of a batch, `p` per call: A blocks side by side along K, B blocks on the
        diagonal of a ``[p*k, p*n]`` matrix (zeros elsewhere add nothing to the exact sums), the result's
        diagonal blocks taken apart again."""
        bt, m, k = a.shape
        n = b.shape[2]
        g = -(-bt // p)
        if g * p != bt:
            a = torch.cat([a, a.new_zeros(g * p - bt, m, k)])
            b = torch.cat([b, b.new_zeros(g * p - bt, k, n)])
        ap = a.reshape(g, p, m, k).permute(0, 2, 1, 3).reshape(g, m, p * k)
        bp = b.new_zeros(g, p * k, p * n)
        bp.view(g, p, k, p, n).diagonal(dim1=1, dim2=3).copy_(b.reshape(g, p, k, n).permute(0, 2, 3, 1))
        key = None if b_key is None else ("packed", p, b_key)
        out = self.gemm(ap, bp, k_call, key, narrow, pack=False)
        return out.reshape(g, m, p, n).permute(0, 2, 1, 3).reshape(g * p, m, n)[:bt]

    def _stack(self, a: torch.Tensor, b: torch.Tensor, start: float, calls: int) -> torch.Tensor:
        """A batch of GEMMs whose N and K fit one call, on units taking stacks, as one invocation of one unit in the
        caller's thread; tensors in and out, no copies.

        The batch entries share each call (a stack). M may be cut into `calls` blocks (M beyond the call limit):
        the stacked product of all rows at once is the concatenation of the blocks' products, bit for bit (every
        output row is its own sums), so it runs as one product and counts as the `calls` kernel calls the tiling
        makes, all of this unit's."""
        u = next(self._next_unit) % len(self.units)
        with self._unit_locks[u]:
            t1 = time.perf_counter()
            out = self.units[u].run_stack(a, b, calls)
            t2 = time.perf_counter()
        bt, m, k = a.shape
        STATS.record({"prepare": t1 - start, "run": t2 - t1, "schedule_wall": t2 - start}, {"kernel_calls": calls},
                     (self.units[u].name, calls, *self._volume(bt, m, b.shape[2], k, calls), t2 - t1))
        return out

    def stack_calls(self, m: int) -> int:
        """Calls of a stack of products with `m` rows on units that take stacks (`_stack`): one, or one per M block."""
        lim = self.active.limits
        return 1 if m <= lim.m else len(blocks(m, self._tile[0], lim.m))

    def _volume(self, bt: int, m: int, n: int, k: int, calls: int = 1) -> tuple[int, int]:
        """(tiles, padded calls) of `calls` unpadded calls computing ``bt`` products ``[m, k] @ [k, n]`` with M cut
        into `calls` blocks (all but the last a multiple of the M tile)."""
        tile = self._tile
        tiles = bt * -(-m // tile[0]) * -(-n // tile[1]) * -(-k // tile[2])
        if n % tile[1] or k % tile[2]:
            return tiles, calls
        return tiles, int(m % tile[0] != 0)

    def host_call(self, m: int, n: int, k: int, seconds: float, counters: dict[str, int], calls: int = 1,
                  batch: int = 1) -> None:
        """Account `calls` calls of `batch` ``[m, k] @ [k, n]`` products each (a call of several products as `_stack`
        counts a stack) that the engine computed itself in `seconds` (units with `exact`), one call each of the next
        units in turn; `counters` (including ``kernel_calls: calls``) are added to the statistics."""
        units = len(self.units)
        per_unit = (((next(self._next_unit) % units, 1),) if calls == 1
                    else collections.Counter(next(self._next_unit) % units for _ in range(calls)).items())
        phases = {"run": seconds, "schedule_wall": seconds}
        for u, c in per_unit:
            unit = self.units[u]
            unit.counted(c)
            tiles, padded = self._volume(c * batch, m, n, k)
            STATS.record(phases, counters, (unit.name, c, tiles, padded * c, seconds * c / calls))
            phases = counters = {}  # once, with the first unit

    def _work(self, job: _Job, u: int) -> None:
        unit: ComputeUnit = self.units[u]
        lock = self._unit_locks[u]
        prep = run = coll = 0.0
        calls = tiles = padded = 0
        try:
            while (item := job.take(u)) is not None:
                acc = None
                for task in item:
                    t0 = time.perf_counter()
                    a_blk, b_blk = job.prepare(task)
                    tp = time.perf_counter()
                    with lock:
                        t1 = time.perf_counter()
                        res = self._run(u, a_blk, b_blk, _tile_key(job.b_key, task))
                        t2 = time.perf_counter()
                    acc = job.accumulate(task, res, acc)
                    prep, run, coll = prep + tp - t0, run + t2 - t1, coll + time.perf_counter() - t2
                    calls += 1
                    tiles += job.tiles(task)
                    padded += (task.m[1], task.n[1], task.k[1]) != (task.m[2], task.n[2], task.k[2])
                t3 = time.perf_counter()
                job.store(item[0], acc)
                coll += time.perf_counter() - t3
        except BaseException:
            job.failed = True
            raise
        finally:
            STATS.unit_calls(unit.name, calls, tiles, padded, run)
            STATS.phase("prepare", prep)
            STATS.phase("run", run)
            STATS.phase("collect", coll)


_schedulers: dict[ActiveTarget, Scheduler] = {}
_lock = threading.Lock()


def scheduler(active: ActiveTarget) -> Scheduler:
    """The persistent scheduler of `active` (created on first use, stopped when the target closes)."""
    s = _schedulers.get(active)  # the common case, without the lock (dict reads are atomic)
    if s is not None:
        return s
    with _lock:
        s = _schedulers.get(active)
        if s is None:
            if active.closed:
                raise RuntimeError(f"target {active.name!r} was closed")
            s = _schedulers[active] = Scheduler(active)
            active.on_close(lambda: _drop(active))
        return s


def _drop(active: ActiveTarget) -> None:
    with _lock:
        s = _schedulers.pop(active, None)
    if s is not None:
        s.close()
