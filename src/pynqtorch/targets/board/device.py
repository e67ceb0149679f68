"""One board: its pynq device, the overlay loaded on it, its buffer pool and resident weights; the cached
connections to every board (`PYNQ_REMOTE_DEVICES` order, or the local PL), closed at exit."""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...hw.overlay import OverlayError, OverlayInfo
from ..base import TargetUnavailable
from .connection import (
    REMOTE_ENV,
    BoardAddress,
    BoardError,
    BufferPool,
    board_addresses,
    error_text,
    free_buffers,
    on_board,
    open_pynq_device,
)
from .overlay import check_interrupt, check_ip_dict, check_loadable, complete_clock_rates
from .weights import ResidentWeights, weight_cache_budget

log = logging.getLogger(__name__)


class BoardDevice:
    """One board: its pynq device, the overlay loaded on it, and its buffer pool."""

    def __init__(self, address: BoardAddress, rpc_timeout_s: float) -> None:
        self.address = address
        self.pynq = open_pynq_device(address, rpc_timeout_s)
        self.pool = BufferPool(self.pynq)
        self.weights = ResidentWeights(self._allocate, weight_cache_budget())
        self.overlay: OverlayInfo | None = None
        self.lock = threading.Lock()
        self._mmio: dict[int, Any] = {}
        self._users = 0
        self.loads = 0  # overlay (re)loads on this connection
        self.ip_dict: dict[str, Any] | None = None  # pynq's parse of the design this connection downloaded
        self.orphans: list[Any] = []  # buffers a busy IP may still write; freed when the connection closes
        self._gone = False  # freeing failed once (reported once)

    def _allocate(self, words: int, dtype: Any) -> Any:
        import pynq

        return pynq.allocate((words,), dtype, target=self.pynq, cacheable=True)  # flushed/invalidated per call

    def acquire(self) -> None:
        """Count one more compute unit using this board's buffers."""
        with self.lock:
            self._users += 1

    def release(self) -> None:
        """One unit is done; when none is left, free the pooled buffers and resident weights."""
        with self.lock:
            self._users -= 1
            idle = self._users <= 0
        if idle:
            self.free_buffers()

    def free_buffers(self, extra: Sequence[Any] = ()) -> None:
        """Free resident weights, pooled buffers and `extra`; a board that is gone gets one log line, once."""
        left = 0
        err = None
        for n, e in (self.weights.close(), self.pool.close(), free_buffers(list(extra))):
            left += n
            err = err or e
        if err is not None and not self._gone:
            self._gone = True
            log.warning("board %s: %d buffer(s) not freed, the board is gone (%s)", self.address, left,
                        error_text(err))

    def load(self, spec: OverlayInfo, download: bool | None = None) -> None:
        """Load `spec` (downloading .bit/.hwh through pynq.Overlay when present) and check its IPs respond.

        An IP's registers are only read once the board is known to hold `spec`'s bitstream: downloaded here,
        or named by pynq's PL state (`loaded_bitstream`); an AXI read no IP answers can stall the bus.
        """
        with self.lock:
            if self.overlay == spec and not download:
                return
            bit = spec.bitstream
            downloaded = False
            if bit.exists():
                check_loadable(spec)  # before anything reaches the board
                if download is not False:
                    self._download(spec)
                    downloaded = True
            elif download:
                raise OverlayError(f"overlay {spec.name}: no bitstream at {bit} to download")
            if not downloaded:
                self.ip_dict = None
                held = self.loaded_bitstream()
                if held is None or Path(held).stem != bit.stem:
                    raise OverlayError(
                        f"overlay {spec.name}: board {self.address} holds {held or 'no bitstream pynq knows of'}, "
                        f"not {bit.name}, so its IPs are not touched (an AXI read that no IP answers can stall the "
                        f"bus); download it: put {bit.name} + {spec.hwh.name} in {spec.folder} (or pass download=True)")
            self._mmio.clear()
            self.overlay = spec
            self.loads += 1  # units rewrite every register after this (a download resets the PL)
            for ip in spec.ips:
                self._probe_ip(ip.instance, ip.base_int, ip.range_int)

    def interrupt(self, instance: str) -> Any:
        """pynq's `Interrupt` for IP `instance`'s ap_done line; `OverlayError` unless the overlay this connection
        downloaded wires it to an interrupt controller, `TargetUnavailable` for a PYNQ.remote board."""
        if self.address.host is not None:
            raise TargetUnavailable(f"board {self.address}: an interrupt-driven wait needs pynq on the board itself "
                                    "(PYNQ.remote has no interrupts); use wait='poll'")
        if self.ip_dict is None:
            raise OverlayError(f"IP {instance}: its interrupt wiring is only known for an overlay this process "
                               "downloaded (with its .bit + .hwh); use wait='poll'")
        check_interrupt(self.ip_dict, instance, self.overlay.hwh.name if self.overlay else "the .hwh")
        import pynq

        return pynq.Interrupt(f"{instance}/interrupt")

    def loaded_bitstream(self) -> str | None:
        """The bitstream the board holds by pynq's own PL state, or None: on the board pynq's global state file,
        for a PYNQ.remote board its FPGA manager's firmware node (``<name>.bin``)."""
        try:
            if self.address.host is None:
                from pynq.pl_server.global_state import global_state_file_exists, load_global_state

                return load_global_state().bitfile_name if global_state_file_exists() else None
            from pynq.pl_server.remote_device import BS_FPGA_MAN

            held = self.pynq.read_file(BS_FPGA_MAN, output_as_string=True)
        except Exception as e:  # noqa: BLE001 -- no state to read: nothing is known to be loaded
            log.warning("board %s: cannot read the PL state: %s", self.address, error_text(e))
            return None
        held = held.decode() if isinstance(held, bytes) else str(held)
        return held.strip().strip("\x00") or None

    def _download(self, spec: OverlayInfo) -> None:
        """Load `spec`'s .bit + .hwh through `pynq.Overlay`, then check pynq's parsed address map against it."""
        import pynq
        from pynq.ps import Clocks

        try:
            ol = pynq.Overlay(str(spec.bitstream), device=self.pynq, download=False)
            complete_clock_rates(ol, spec)
            if "_real_instance" in vars(Clocks):  # pynq keeps the first device's clock registers: use this board's
                del Clocks._real_instance
            ol.download()
        except OverlayError:
            raise
        except Exception as e:  # pynq raises RuntimeError, TypeError or gRPC errors here
            raise BoardError(f"board {self.address}: loading {spec.bitstream} through pynq.Overlay failed: "
                             f"{error_text(e)}") from e
        check_ip_dict(spec, ol.ip_dict)
        self.ip_dict = ol.ip_dict

    def mmio(self, base: int, span: int) -> Any:
        if base not in self._mmio:
            import pynq

            try:
                self._mmio[base] = pynq.MMIO(base, span, device=self.pynq)
            except Exception as e:  # noqa: BLE001 -- remote boards report unmapped windows as RuntimeError
                raise BoardError(f"board {self.address}: cannot map 0x{base:08x}: {e}") from None
        return self._mmio[base]

    def _probe_ip(self, instance: str, base: int, span: int) -> None:
        assert self.overlay is not None
        try:
            self.mmio(base, span).read(0)
        except BoardError as e:
            raise OverlayError(f"overlay {self.overlay.name}: IP {instance} does not answer at 0x{base:08x} on "
                               f"board {self.address} (is the overlay loaded?): {e}") from None

    def close(self) -> None:
        orphans, self.orphans = self.orphans, []
        self.free_buffers(orphans)


_devices: dict[BoardAddress, BoardDevice] = {}
_devices_lock = threading.Lock()


def board_devices() -> list[BoardAddress]:
    """Boards by device index: one per `PYNQ_REMOTE_DEVICES` entry, or the local PL on a board."""
    return board_addresses()


def board_device(index: int = 0, rpc_timeout_s: float = 30.0) -> BoardDevice:
    """The (cached) connection to board `index`."""
    addresses = board_addresses()
    if not 0 <= index < len(addresses):
        raise TargetUnavailable(f"board device {index} does not exist; {len(addresses)} board(s) found "
                                f"({REMOTE_ENV}={os.environ.get(REMOTE_ENV, '')!r}, on board: {on_board()})")
    address = addresses[index]
    with _devices_lock:
        if address not in _devices:
            _devices[address] = BoardDevice(address, rpc_timeout_s)
        return _devices[address]


def close_board_devices() -> None:
    """Free every pooled buffer and resident weight, and forget the connections (a new target reconnects).

    Registered with `atexit`, so a process that exits without closing its target leaves nothing on a board.
    """
    with _devices_lock:
        devices = list(_devices.values())
        _devices.clear()
    for d in devices:
        d.close()


atexit.register(close_board_devices)
