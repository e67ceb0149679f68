"""`VirtualBoard`: a PYNQ.remote-compatible gRPC server whose programmable logic runs C-simulated kernels.

    with VirtualBoard("gemm_single") as vb:          # binds 127.0.0.1 on a free port
        os.environ["PYNQ_REMOTE_DEVICES"] = vb.address
        ...                                          # the unmodified pynq client talks to it

The board boots with `overlay` already loaded (or none); a bitstream download from the client programs the
fabric with the overlay a placeholder bitstream names (`sim.handoff`), or with a Vivado build whose folder
`add_overlay` made known (`program_firmware`); `load()` makes a folder known. `live_buffers` counts buffers the client
allocated and has not freed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from pynq.remote import buffer_pb2_grpc, mmio_pb2_grpc, remote_device_pb2_grpc
from typing_extensions import Self

from ..hw.kernels import KernelInfo
from ..hw.overlay import OverlayInfo, find_overlay, overlays
from .fabric import Fabric, Faults, IPSpec
from .files import BoardFiles
from .handoff import placeholder_design
from .memory import BufferMemory
from .services import BoardDied, BufferService, DeviceService, MmioService

log = logging.getLogger(__name__)


def _csim_library(kernel: KernelInfo, copy: int) -> Any:
    from ..targets.csim import CsimLibrary
    from ..targets.csim.blocks import BlockLibrary

    return (CsimLibrary if kernel.desc.op == "gemm" else BlockLibrary)(kernel, copy=copy)


class VirtualBoard:
    """A virtual PYNQ-Z2 served over gRPC; see the module docstring."""

    def __init__(self, overlay: str | os.PathLike | OverlayInfo | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, faults: Faults | None = None, exit_on_die: bool = False,
                 library: Callable[[KernelInfo, int], Any] | None = None, board_name: str = "Pynq-Z2",
                 memory_bytes: int | None = None, workers: int = 16) -> None:
        self.host = host
        self.port = port
        self.faults = faults or Faults()
        self.memory = BufferMemory(size=memory_bytes) if memory_bytes else BufferMemory()
        self._libraries: dict[tuple[Path, str], Any] = {}
        self._library_factory = library or _csim_library
        self._lib_lock = threading.Lock()
        self._exit_on_die = exit_on_die
        self.fabric = Fabric(self.memory, self.faults, self._library, self._die)
        self.files = BoardFiles(board_name, self.program_firmware)
        self.bitstream_attrs: tuple[str, bool] = ("", False)
        self.pl_clocks: dict[int, int] = {}
        self._workers = workers
        self._server: grpc.Server | None = None
        self._extra: list[OverlayInfo] = []
        if overlay is not None:
            self.load(overlay)

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> VirtualBoard:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="vb-rpc"),
                             options=[("grpc.max_receive_message_length", 64 << 20),
                                      ("grpc.max_send_message_length", 64 << 20),
                                      ("grpc.so_reuseport", 0)])
        remote_device_pb2_grpc.add_RemoteDeviceServicer_to_server(DeviceService(self), server)
        mmio_pb2_grpc.add_MmioServicer_to_server(MmioService(self), server)
        buffer_pb2_grpc.add_RemoteBufferServicer_to_server(BufferService(self), server)
        bound = server.add_insecure_port(f"{self.host}:{self.port}")
        if bound == 0:
            raise OSError(f"virtual board: cannot bind {self.host}:{self.port}")
        self.port = bound
        server.start()
        self._server = server
        log.info("virtual board listening on %s (design %s)", self.address, self.fabric.design)
        return self

    def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        self.fabric.program(None, [])

    def wait(self) -> None:
        """Block until the server stops."""
        if self._server is not None:
            self._server.wait_for_termination()

    def __enter__(self) -> Self:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """``host:port`` as `PYNQ_REMOTE_DEVICES` entries name this board."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def live_buffers(self) -> int:
        """Buffers allocated by clients and not freed."""
        return self.memory.live

    @property
    def design(self) -> str | None:
        """Name of the overlay the fabric is programmed with."""
        return self.fabric.design

    # -- programmable logic ----------------------------------------------------------------------------
    def add_overlay(self, overlay: str | os.PathLike | OverlayInfo) -> OverlayInfo:
        """Make `overlay` (a name, an overlay folder/overlay.json, or a spec) one a bitstream download can load."""
        spec = overlay if isinstance(overlay, OverlayInfo) else find_overlay(overlay)
        if spec not in self._extra:
            self._extra.append(spec)
        return spec

    def load(self, overlay: str | os.PathLike | OverlayInfo) -> None:
        """Program the fabric with `overlay` (a name, an overlay folder/overlay.json, or a spec)."""
        spec = self.add_overlay(overlay)
        ips = [IPSpec(ip.instance, spec.kernels[ip.instance], ip.base_int, ip.range_int) for ip in spec.ips]
        for ip in ips:  # the IPs exist once the PL is programmed: a first call never waits for a C-sim build
            try:
                self._library(ip.kernel, ip.instance)
            except Exception as e:  # noqa: BLE001 -- the IP's calls then fail (never raise ap_done), as before
                log.error("%s: C-sim library of %s unavailable: %s", ip.instance, ip.kernel.desc.name, e)
        self.fabric.program(spec.name, ips)
        self.files.set_loaded(spec.bitstream.with_suffix(".bin").name)

    def program_firmware(self, binfile: str) -> None:
        """What writing the FPGA manager's firmware node does: load the design that bitstream carries.

        A placeholder bitstream (`sim.handoff.placeholder_bit`) names its overlay. A real Vivado bitstream is
        recognised as the `.bit` of a known overlay folder with the same name (`add_overlay` of a Vivado
        build: the downloaded `.bin` must be exactly that `.bit`'s body; the body is otherwise not
        interpreted), and its HLS IPs run their kernels at the `.hwh`'s addresses. Anything else leaves the
        PL empty, as a corrupt bitstream would.
        """
        if not binfile:
            return
        data = self.files.firmware(binfile)
        if data is None:
            log.error("firmware %s was never written to /lib/firmware; PL left unprogrammed", binfile)
            self._empty_pl()
            return
        design = placeholder_design(data)
        if design is None:
            spec = next((s for s in self._extra if s.bitstream.stem == Path(binfile).stem
                         and _bin_of(s.bitstream) == data), None)
            if spec is None:
                log.error("%s is neither a placeholder bitstream nor the .bit of an overlay folder this board "
                          "knows (%s); the PL now holds no IPs", binfile,
                          [str(s.bitstream) for s in self._extra] or "none added")
                self._empty_pl()
                return
            self.load(spec)
            return
        for spec in self._extra + list(overlays().values()):
            if spec.name == design:
                self.load(spec)
                return
        log.error("bitstream %s names overlay %r, which this board does not know; the PL now holds no IPs",
                  binfile, design)
        self._empty_pl()

    def _empty_pl(self) -> None:
        """A bitstream that did not configure anything: no IPs, and no design named as loaded."""
        self.fabric.program(None, [])
        self.files.set_loaded("")

    def _library(self, kernel: KernelInfo, instance: str) -> Any:
        """The C-sim library of `kernel` for IP `instance` (a private copy per IP: no shared static state)."""
        key = (kernel.folder, instance)
        with self._lib_lock:
            if key not in self._libraries:
                self._libraries[key] = self._library_factory(kernel, len(self._libraries))
            return self._libraries[key]

    def _die(self) -> None:
        if self._exit_on_die:
            os._exit(70)
        server = self._server
        self._server = None
        if server is not None:
            threading.Thread(target=lambda: server.stop(0), daemon=True).start()
        raise BoardDied()


def _bin_of(bit: Path) -> bytes | None:
    """The `.bin` pynq writes to /lib/firmware for `bit` (its body, 32-bit words byte-swapped), or None."""
    from pynq.pl_server.embedded_device import bit2bin

    try:
        return bit2bin(bit.read_bytes())
    except Exception:  # noqa: BLE001 -- not a readable, complete bitstream: it matches nothing
        return None
