"""Boards the `board` target can reach: the local PL (pynq on the board) or PYNQ.remote boards from a PC.

`PYNQ_REMOTE_DEVICES=a,b` lists boards by address; each entry may carry a port (`127.0.0.1:50051`),
which pynq's own probe does not accept, so the devices are opened here with pynq's `RemoteDevice`
class directly, one per entry, and every gRPC call gets a deadline so a dead or frozen board raises
instead of hanging. On the board itself (pynq 3.1 images) the local device is pynq's active device.
"""

from __future__ import annotations

import collections
import importlib.metadata
import logging
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..base import TargetUnavailable

REMOTE_ENV = "PYNQ_REMOTE_DEVICES"
PYNQ_PORT = 7967
FPGA_MANAGER_NODE = Path("/sys/class/fpga_manager/fpga0/firmware")
DEFAULT_RPC_TIMEOUT_S = 30.0

log = logging.getLogger(__name__)


class BoardError(RuntimeError):
    """A board operation failed (unreachable board, failed RPC, kernel error); the message names the board."""


@dataclass(frozen=True)
class BoardAddress:
    """Where device `index` lives: `host`/`port` for a PYNQ.remote board, or the local PL (`host` None)."""

    index: int
    host: str | None
    port: int = PYNQ_PORT

    def __str__(self) -> str:
        return "local PL" if self.host is None else f"{self.host}:{self.port}"


def on_board() -> bool:
    """True when running on a Zynq board with a Linux FPGA manager (what pynq's embedded device needs)."""
    return FPGA_MANAGER_NODE.exists()


def parse_remote(value: str) -> list[tuple[str, int]]:
    """Entries of `PYNQ_REMOTE_DEVICES`: ``host``, ``host:port`` or ``[v6addr]:port``, comma separated."""
    out = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        host, port = entry, PYNQ_PORT
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            if rest:
                port = _port(rest.removeprefix(":"), entry)
        elif entry.count(":") == 1:
            host, p = entry.split(":")
            port = _port(p, entry)
        out.append((host, port))
    return out


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{REMOTE_ENV}: entry {entry!r} has an invalid port {text!r}")
    return int(text)


def board_addresses() -> list[BoardAddress]:
    """Every board reachable from here, in device-index order."""
    remote = os.environ.get(REMOTE_ENV, "")
    if remote:
        return [BoardAddress(i, h, p) for i, (h, p) in enumerate(parse_remote(remote))]
    return [BoardAddress(0, None)] if on_board() else []


def _deadline_stubs(device: Any, seconds: float) -> None:
    """Give every gRPC call of a pynq `RemoteDevice` a deadline (pynq sets none) by re-creating its stubs."""
    import grpc
    from pynq.pl_server import remote_device as rd

    class CallDetails(collections.namedtuple("CallDetails", "method timeout metadata credentials "
                                             "wait_for_ready compression"), grpc.ClientCallDetails):
        pass

    class Deadline(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor):
        def _with(self, d: Any) -> Any:
            if d.timeout is not None:
                return d
            return CallDetails(d.method, seconds, d.metadata, d.credentials, d.wait_for_ready, d.compression)

        def intercept_unary_unary(self, continuation, details, request):
            return continuation(self._with(details), request)

        def intercept_unary_stream(self, continuation, details, request):
            return continuation(self._with(details), request)

        def intercept_stream_unary(self, continuation, details, request_iterator):
            return continuation(self._with(details), request_iterator)

    channel = grpc.intercept_channel(device.client.channel, Deadline())
    device._stub = {
        "device": rd.remote_device_pb2_grpc.RemoteDeviceStub(channel),
        "mmio": rd.mmio_pb2_grpc.MmioStub(channel),
        "buffer": rd.buffer_pb2_grpc.RemoteBufferStub(channel),
        "gpio": rd.gpio_pb2_grpc.GpioStub(channel),
    }


def open_pynq_device(address: BoardAddress, rpc_timeout_s: float = DEFAULT_RPC_TIMEOUT_S) -> Any:
    """The pynq `Device` for `address` (pynq >= 4.0 `RemoteDevice` for remote boards)."""
    try:
        import pynq
    except ImportError as e:
        raise TargetUnavailable(f"board target needs pynq (pip install 'pynqtorch[board]'): {e}") from None
    if address.host is None:
        if os.geteuid() != 0:
            raise TargetUnavailable("the board target needs root on the board: pynq maps the PL's registers "
                                    "(/dev/mem) and allocates DMA buffers; run as root (e.g. sudo -E python ...)")
        return pynq.Device.active_device
    version = importlib.metadata.version("pynq")
    if int(version.split(".")[0]) < 4:  # pynq 3.1 has a RemoteDevice, but not the services pynqtorch uses
        raise TargetUnavailable(f"{REMOTE_ENV} needs pynq >= 4.0 (PYNQ.remote) on this machine; found pynq {version} "
                                "(pip install 'pynqtorch[remote]'; on the board itself keep its pynq 3.1)")
    try:
        from pynq.pl_server.remote_device import RemoteDevice
    except ImportError:
        raise TargetUnavailable(f"{REMOTE_ENV} needs pynq >= 4.0 (PYNQ.remote) on this machine; found pynq "
                                f"{getattr(pynq, '__version__', '?')}") from None
    try:
        device = RemoteDevice(address.index, address.host, address.port)
    except Exception as e:  # noqa: BLE001 -- pynq raises RuntimeError or grpc errors here
        raise BoardError(f"cannot reach PYNQ.remote board {address}: {e}") from None
    _deadline_stubs(device, rpc_timeout_s)
    return device


def free_buffers(bufs: list[Any]) -> tuple[int, Exception | None]:
    """Free pynq buffers: (how many were not freed, the first error). After one failure the rest are not
    tried: the board is gone, and each further RPC would fail again or wait for its deadline."""
    for i, b in enumerate(bufs):
        try:
            b.freebuffer()
        except Exception as e:  # noqa: BLE001 -- any failure here means the board is gone
            return len(bufs) - i, e
    return 0, None


class BufferPool:
    """Reusable pynq buffers by (word count, dtype): after warm-up a call allocates nothing."""

    def __init__(self, device: Any, keep: int = 8) -> None:
        self._device = device
        self._free: dict[tuple[int, str], list[Any]] = {}
        self._keep = keep
        self._lock = threading.Lock()
        self._addresses: dict[int, tuple[weakref.ref, int]] = {}
        self.allocated = 0

    def take(self, words: int, dtype: Any) -> Any:
        key = (words, str(dtype))
        with self._lock:
            if self._free.get(key):
                return self._free[key].pop()
        import pynq

        self.allocated += 1
        # Cacheable: the CPU reads and writes them at full speed; each call flushes its inputs before ap_start and
        # invalidates its result after ap_done (`BoardUnit`).
        return pynq.allocate((words,), dtype, target=self._device, cacheable=True)

    def address(self, buf: Any) -> int:
        """Physical address of a buffer (asked once per buffer: on a remote board each query is an RPC). Kept by
        `id` with a weak reference that must still be `buf`: a freed buffer's id is reused by later objects."""
        hit = self._addresses.get(id(buf))
        if hit is None or hit[0]() is not buf:
            hit = self._addresses[id(buf)] = (weakref.ref(buf), int(buf.physical_address))
        return hit[1]

    def give(self, buf: Any) -> None:
        key = (buf.shape[0], str(buf.dtype))
        with self._lock:
            spare = self._free.setdefault(key, [])
            if len(spare) < self._keep:
                spare.append(buf)
                return
            self._addresses.pop(id(buf), None)
        buf.freebuffer()

    def close(self) -> tuple[int, Exception | None]:
        """Free every pooled buffer (`free_buffers`' result: a board that is gone keeps nothing to free)."""
        with self._lock:
            bufs = [b for spare in self._free.values() for b in spare]
            self._free.clear()
            self._addresses.clear()
        return free_buffers(bufs)


def error_text(e: Exception) -> str:
    """`CODE: details` for a gRPC error (the board went away, a deadline passed), else the message."""
    code, details = getattr(e, "code", None), getattr(e, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {details()}"
    return f"{type(e).__name__}: {e}"
