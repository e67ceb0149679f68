"""Map/rows kernel IPs on the board: one call as pack → copy + flush → registers, ap_start, wait → copy back.

An overlay may place map/rows IPs beside its GEMM units (e.g. ``gemm_ops``); `board_block_units` gives one
unit per IP running the kernel on every board of the target. Buffers come from the board's pool; a call that
times out keeps its buffers (the IP may still write them) until the board connection closes.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ...hw import blocks as hwb
from ...hw.kernels import KernelInfo
from ...hw.registers import AP_START, wait_done
from ..base import TargetUnavailable
from ..blocks import Arrays, BlockUnit, call_words, read_outputs
from .connection import BoardError, error_text
from .unit import KernelTimeout


class BoardBlockUnit(BlockUnit):
    """One map/rows IP instance on one board."""

    def __init__(self, board: Any, instance: str, base: int, span: int, info: KernelInfo, timeout_s: float) -> None:
        super().__init__(f"board{board.address.index}/{instance}", info)
        self.board = board
        self.instance = instance
        self.base = base
        self.timeout_s = timeout_s
        self._span = span
        self._mmio = board.mmio(base, span)
        self._loads = board.loads
        self._ctrl = info.desc.control.ap_ctrl_int
        self._hw = threading.Lock()
        board.acquire()
        self._closed = False

    def _run(self, op: str, data: Arrays, scalars: dict[str, float]) -> Arrays:
        words, sizes = call_words(self.desc, data, scalars)
        pool = self.board.pool
        bufs = {a.name: pool.take(words[a.name].size, words[a.name].dtype) for a in self.desc.args if a.pointer}
        try:
            for a in self.desc.args:
                if a.pointer and not hwb.is_output(a):
                    bufs[a.name][:] = words[a.name]
                    bufs[a.name].flush()
            addresses = {name: pool.address(buf) for name, buf in bufs.items()}
            values = hwb.register_values(self.desc, addresses, {**scalars, **sizes})
            with self._hw:
                if self._loads != self.board.loads:  # a (re)download renewed the board's mappings
                    self._mmio = self.board.mmio(self.base, self._span)
                    self._loads = self.board.loads
                for offset, value in values.items():  # all of them, every call: a PL reset zeroes them
                    self._mmio.write(offset, value)
                self._mmio.write(self._ctrl, AP_START)
                if not wait_done(lambda: int(self._mmio.read(self._ctrl)), self.timeout_s):
                    raise KernelTimeout(f"{self.name}: kernel {self.desc.name} at IP {self.instance} "
                                        f"(0x{self.base:08x}) did not raise ap_done within {self.timeout_s} s; its "
                                        "buffers stay allocated", started=True)
            out = {}
            for a in self.desc.args:
                if a.pointer and hwb.is_output(a):
                    bufs[a.name].invalidate()
                    out[a.name] = np.asarray(bufs[a.name])
            result = read_outputs(self.desc, out, sizes, data["x"].shape)
        except KernelTimeout:
            self.board.orphans.extend(bufs.values())
            bufs = {}
            raise
        except BoardError:
            raise
        except Exception as e:  # pynq reports board failures as RuntimeError or gRPC errors
            raise BoardError(f"{self.name}: board {self.board.address} failed: {error_text(e)}") from e
        finally:
            for buf in bufs.values():
                pool.give(buf)
        return result

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.board.release()


def board_block_units(boards: list, spec: Any, info: KernelInfo, timeout_s: float) -> list[BlockUnit]:
    """One unit per IP of overlay `spec` running kernel `info`, on every board (loaded with `spec`)."""
    ips = [ip for ip in spec.ips if spec.kernels[ip.instance].folder == info.folder]
    if not ips:
        raise TargetUnavailable(f"overlay {spec.name} has no IP running kernel {info.name} (IPs: "
                                + ", ".join(f"{ip.instance}={ip.kernel}" for ip in spec.ips) + ")")
    return [BoardBlockUnit(board, ip.instance, ip.base_int, ip.range_int, info, timeout_s)
            for ip in ips for board in boards]
