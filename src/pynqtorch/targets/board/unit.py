"""A compute unit on a board: one HLS IP instance, called through pynq.

One call is a staged pipeline on pooled pynq buffers: pack → copy + flush → program registers, ap_start,
wait for ap_done (with a timeout) → invalidate + copy back → unpack. Only the start/wait stage holds the
IP, so a second caller can pack and transfer tile i+1 while tile i runs (double buffering).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Hashable
from typing import Any

import numpy as np

from ...hw.description import Description
from ...hw.packing import call_dims, pack_operand, unpack_result, word_dtype, words_for
from ...hw.registers import AP_IDLE, AP_START, GIER, IP_IER, IP_ISR, pointer_args, register_values, wait_done
from ..base import ComputeUnit, golden_gemm
from .connection import BoardError, error_text
from .device import BoardDevice

log = logging.getLogger(__name__)
_ONE = (1).to_bytes(4, "little")  # a register value, as `register_values` encodes them


class KernelTimeout(BoardError):
    """A kernel did not raise ap_done in time; `started` tells whether this call's kernel was started."""

    def __init__(self, message: str, started: bool) -> None:
        super().__init__(message)
        self.started = started


class VerifyError(BoardError):
    """A verified tile differs from the golden model."""


class BoardUnit(ComputeUnit):
    """One HLS IP instance on one board.

    `run(a, b, b_key=...)`: a `b_key` names the B tile stably (the engine passes one for tiles of cached
    weights); the packed tile then stays resident on the board and later calls with that key transfer
    only A (`board.weights`).
    """

    resident_b = True

    def __init__(self, board: BoardDevice, instance: str, base: int, span: int, desc: Description,
                 timeout_s: float, verify_every: int, interrupt: Any = None) -> None:
        super().__init__(f"board{board.address.index}/{instance}", desc)
        self.board = board
        self.instance = instance
        self.base = base
        self.timeout_s = timeout_s
        self.verify_every = verify_every
        self._span = span
        self._interrupt = interrupt  # pynq `Interrupt` of ap_done, or None to poll ap_ctrl
        self._mmio = board.mmio(base, span)
        self._ctrl = desc.control.ap_ctrl_int
        self._hw = threading.Lock()  # held while the IP's registers are programmed and it runs
        self._written: dict[int, bytes] = {}  # register values this IP holds since the board's last (re)load
        self._loads = board.loads
        self._held: list[Any] = []  # buffers of a call that timed out; kept until the IP is idle again
        self._verify_count = 0
        self._args = {a.role: a for a in desc.args}
        b = self._args["b"]
        self._b_packing = (b.layout, b.pack, str(word_dtype(b)))
        board.acquire()
        self._closed = False

    def run(self, a: np.ndarray, b: np.ndarray, b_key: Hashable | None = None) -> np.ndarray:
        """Run one call; unlike the base, only the start/wait stage is exclusive (callers overlap the rest)."""
        with self._lock:
            self.calls += 1
        return self._run(a, b, b_key)

    def _run(self, a: np.ndarray, b: np.ndarray, b_key: Hashable | None = None) -> np.ndarray:
        m, k = a.shape
        n = b.shape[1]
        if b.shape[0] != k:
            raise ValueError(f"{self.name}: a is {m}x{k} but b is {b.shape[0]}x{n}")
        call_dims(self.desc, m, n, k)  # a bad shape is an error here, not a kernel that never finishes
        words = {"a": self._pack("a", a, m, n, k)}
        key = None if b_key is None else (self._b_packing, b.shape, b_key)
        resident = None
        if key is not None:
            resident = self.board.weights.acquire(key, lambda: self._pack("b", b, m, n, k))
            if resident is None:
                key = None
        if resident is None:
            words["b"] = self._pack("b", b, m, n, k)
        pool = self.board.pool
        roles = ("a", "c") if resident is not None else ("a", "b", "c")
        bufs = {r: pool.take(words_for(self._args[r], m, n, k), word_dtype(self._args[r])) for r in roles}
        try:
            for role, w in words.items():
                bufs[role][:] = w
                bufs[role].flush()
            with self._hw:
                self._start_and_wait(bufs if resident is None else {**bufs, "b": resident}, m, n, k)
            bufs["c"].invalidate()
            result = unpack_result(np.asarray(bufs["c"]), self._args["c"], m, n)
        except KernelTimeout as e:
            if e.started:  # the IP may still use these buffers: keep them out of the pool until it is idle
                with self._hw:
                    self._held.extend(bufs.values())
                bufs = {}
                key = None  # and the resident B tile stays pinned (freed when the board's buffers are)
            raise
        except BoardError:
            raise
        except Exception as e:  # pynq reports board failures as RuntimeError or gRPC errors
            raise BoardError(f"{self.name}: board {self.board.address} failed: {error_text(e)}") from e
        finally:
            for buf in bufs.values():
                pool.give(buf)
            if key is not None:
                self.board.weights.release(key)
        with self._lock:
            self._verify_count += 1
            check = self.verify_every and (self._verify_count - 1) % self.verify_every == 0
        if check:
            self._verify(a, b, result)
        return result

    def _pack(self, role: str, x: np.ndarray, m: int, n: int, k: int) -> np.ndarray:
        w = pack_operand(x, self._args[role])
        if w.size != words_for(self._args[role], m, n, k):
            raise ValueError(f"{self.name}: packed operand {role} has {w.size} words, the kernel reads "
                             f"{words_for(self._args[role], m, n, k)} for a {m}x{k}x{n} call")
        return w

    def _read_ctrl(self) -> int:
        return int(self._mmio.read(self._ctrl))

    def _idle(self) -> None:
        """Make sure the IP is idle before programming it (an earlier call may have timed out)."""
        if not self._held:
            return
        deadline = time.monotonic() + self.timeout_s
        while not self._read_ctrl() & AP_IDLE:
            if time.monotonic() > deadline:
                raise KernelTimeout(f"{self.name}: IP {self.instance} at 0x{self.base:08x} is still busy with a call "
                                    f"that timed out earlier (waited another {self.timeout_s} s); reload the "
                                    "overlay to reset the PL", started=False)
            time.sleep(0.001)
        for buf in self._held:
            self.board.pool.give(buf)
        self._held.clear()

    def _start_and_wait(self, bufs: dict[str, Any], m: int, n: int, k: int) -> None:
        self._idle()
        if self._loads != self.board.loads:  # a (re)download reset the PL: every register is zero again
            self._written.clear()
            self._mmio = self.board.mmio(self.base, self._span)  # and the board's mappings were renewed
            self._loads = self.board.loads
        addresses = {a.name: self.board.pool.address(bufs[a.role]) for a in pointer_args(self.desc)}
        for offset, value in register_values(self.desc, addresses, m, n, k).items():
            if self._written.get(offset) != value:
                self._written.pop(offset, None)  # unknown until the write has gone through
                self._mmio.write(offset, value)
                self._written[offset] = value
        if self._interrupt is not None:
            for offset in (GIER, IP_IER):  # ap_done raises the IP's interrupt line
                if self._written.get(offset) != _ONE:
                    self._mmio.write(offset, _ONE)
                    self._written[offset] = _ONE
        self._mmio.write(self._ctrl, AP_START)
        if self._interrupt is not None:
            self._wait_interrupt()
        if not wait_done(self._read_ctrl, self.timeout_s):
            self._written.clear()  # whatever resets the IP next, its registers are written again
            raise KernelTimeout(f"{self.name}: kernel {self.desc.name} at IP {self.instance} (0x{self.base:08x}) on "
                                f"board {self.board.address} did not raise ap_done within {self.timeout_s} s; its "
                                "buffers are held until it goes idle", started=True)

    def _wait_interrupt(self) -> None:
        """Sleep until the IP's interrupt fires (at most `timeout_s`), then acknowledge it; ap_ctrl is read after."""
        try:
            asyncio.run(asyncio.wait_for(self._interrupt.wait(), self.timeout_s))
        except asyncio.TimeoutError:
            self._written.clear()
            raise KernelTimeout(f"{self.name}: kernel {self.desc.name} at IP {self.instance} (0x{self.base:08x}) "
                                f"raised no interrupt within {self.timeout_s} s; its buffers are held until it "
                                "goes idle", started=True) from None
        self._mmio.write(IP_ISR, _ONE)  # toggle-on-write: clears the ap_done status

    def _verify(self, a: np.ndarray, b: np.ndarray, result: np.ndarray) -> None:
        want = golden_gemm(a, b, self.desc.arith)
        bad = np.argwhere(want != result)
        if bad.size:
            i, j = bad[0]
            raise VerifyError(f"{self.name}: tile {a.shape[0]}x{a.shape[1]}x{b.shape[1]} differs from the golden "
                              f"model in {len(bad)} element(s); first at [{i},{j}]: board {result[i, j]}, "
                              f"golden {want[i, j]}")

    def close(self) -> None:
        """Forget register state and stop using the board (its buffers are freed when no unit uses it)."""
        with self._hw:
            self._written.clear()
            if self._closed:
                return
            self._closed = True
            if self._held:
                self._release_held()
        self.board.release()

    def _release_held(self) -> None:
        """Return the buffers of a timed-out call if the IP went idle since; else they stay (it may write them)."""
        try:
            idle = bool(self._read_ctrl() & AP_IDLE)
        except Exception as e:  # noqa: BLE001 -- a board that is gone cannot be asked
            idle = False
            log.warning("%s: cannot read ap_ctrl while closing: %s", self.name, error_text(e))
        if idle:
            for buf in self._held:
                self.board.pool.give(buf)
        else:
            log.warning("%s: IP still busy; %d buffer(s) of a timed-out call stay allocated until the board "
                        "connection is closed", self.name, len(self._held))
            self.board.orphans.extend(self._held)
        self._held.clear()
