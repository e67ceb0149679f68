"""PYNQ.remote gRPC services of the virtual board, implemented on pynq's own generated servicer classes.

Covers what an unmodified pynq >= 4.0 `RemoteDevice` calls: device (file exists/read/write, bitstream
attributes, download, PL clock, shutdown), MMIO (get/read/write) and buffers (allocate/read/write/free/
flush/invalidate/physical and virtual address/cacheable). Errors go back in the `msg` fields the client
checks, or as gRPC status codes where the message has no such field.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Protocol

import grpc
from pynq.remote import (
    buffer_pb2,
    buffer_pb2_grpc,
    mmio_pb2,
    mmio_pb2_grpc,
    remote_device_pb2,
    remote_device_pb2_grpc,
)

from .fabric import Fabric
from .files import BoardFiles
from .memory import BufferMemory

CHUNK = 2 * 1024 * 1024
VIRTUAL_BASE = 0xB000_0000


class BoardDied(Exception):
    """Raised inside a handler when fault injection kills the server mid-call."""


class Board(Protocol):
    """What the services serve: the board's parts (`server.VirtualBoard` is one)."""

    fabric: Fabric
    files: BoardFiles
    memory: BufferMemory
    bitstream_attrs: tuple[str, bool]
    pl_clocks: dict[int, int]

    def program_firmware(self, binfile: str) -> None: ...


class DeviceService(remote_device_pb2_grpc.RemoteDeviceServicer):
    def __init__(self, board: Board) -> None:
        self.board = board

    def existsfile(self, request, context):
        return remote_device_pb2.ExistsFileResponse(exists=self.board.files.exists(request.file_path))

    def readfile(self, request, context) -> Iterator:
        try:
            data = self.board.files.read(request.file_path)
        except FileNotFoundError:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no such file on the virtual board: {request.file_path}")
        for i in range(0, max(len(data), 1), CHUNK):
            yield remote_device_pb2.ReadFileResponse(data=data[i:i + CHUNK])

    def writefile(self, request_iterator, context):
        path, parts = None, []
        for req in request_iterator:
            path = path or req.file_path
            parts.append(req.data)
        if path is not None:
            self.board.files.write(path, b"".join(parts))
        return remote_device_pb2.WriteFileResponse()

    def set_bitstream_attrs(self, request, context):
        self.board.bitstream_attrs = (request.binfile_name, request.partial)
        return remote_device_pb2.SetBitstreamAttrsResponse(status=True)

    def download(self, request_iterator, context):
        data = b"".join(req.buffer for req in request_iterator)
        name = self.board.bitstream_attrs[0]
        self.board.files.write("/lib/firmware/" + name, data)
        self.board.program_firmware(name)
        return remote_device_pb2.DownloadResponse(status=True)

    def set_pl_clk(self, request, context):
        self.board.pl_clocks[request.i] = request.clk_mhz
        return remote_device_pb2.SetPlClkResponse(status=True)

    def shutdown(self, request, context):
        return remote_device_pb2.ShutdownResponse(status=True)


class MmioService(mmio_pb2_grpc.MmioServicer):
    def __init__(self, board: Board) -> None:
        self.board = board
        self._maps: dict[str, tuple[object, int, int]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def get_mmio(self, request, context):
        try:
            ip, offset = self.board.fabric.find(request.base_addr, max(request.length, 4))
        except LookupError as e:
            return mmio_pb2.GetMmioResponse(status=False, msg=str(e))
        with self._lock:
            mmio_id = f"mmio{next(self._ids)}"
            self._maps[mmio_id] = (ip, offset, request.length)
        return mmio_pb2.GetMmioResponse(status=True, mmio_id=mmio_id)

    def _target(self, mmio_id: str, offset: int, length: int):
        ip, base, size = self._maps[mmio_id]
        if ip is not self.board.fabric.slcr and ip not in self.board.fabric.ips:
            raise LookupError(f"{mmio_id}: the PL was reprogrammed since this MMIO was mapped")
        if offset < 0 or offset + length > size:
            raise ValueError(f"{mmio_id}: access at +0x{offset:x} of {length} bytes is outside the mapped "
                             f"0x{size:x} bytes")
        return ip, base + offset

    def read(self, request, context):
        length = request.length or 4
        try:
            ip, off = self._target(request.mmio_id, request.offset, length)
            if length == 8:
                lo, hi = ip.read(off), ip.read(off + 4)
                value = (hi << 32 | lo) if request.word_order != "big" else (lo << 32 | hi)
            else:
                value = ip.read(off) & ((1 << (8 * length)) - 1)
        except (KeyError, LookupError, ValueError) as e:
            return mmio_pb2.ReadResponse(status=False, msg=str(e))
        return mmio_pb2.ReadResponse(status=True, data=value)

    def write(self, request, context):
        data = request.data
        try:
            if len(data) % 4:
                raise ValueError(f"write of {len(data)} bytes is not whole 32-bit words")
            ip, off = self._target(request.mmio_id, request.offset, len(data))
            for i in range(0, len(data), 4):
                ip.write(off + i, int.from_bytes(data[i:i + 4], "little"))
        except BoardDied:
            context.abort(grpc.StatusCode.UNAVAILABLE, "virtual board died (fault injection)")
        except (KeyError, LookupError, ValueError) as e:
            return mmio_pb2.WriteResponse(status=False, msg=str(e))
        return mmio_pb2.WriteResponse(status=True)


class BufferService(buffer_pb2_grpc.RemoteBufferServicer):
    def __init__(self, board: Board) -> None:
        self.memory = board.memory

    def allocate(self, request, context):
        try:
            buf = self.memory.allocate(request.size, request.dtype)
        except (MemoryError, ValueError) as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        return buffer_pb2.AllocateResponse(buffer_id=buf.buffer_id)

    def write(self, request_iterator, context):
        pos, buf = 0, None
        try:
            for req in request_iterator:
                buf = buf or self.memory.get(req.buffer_id)
                start = req.start if req.end > req.start else pos
                if start + len(req.data) > buf.size:
                    raise ValueError(f"write of {len(req.data)} bytes at {start} overruns {buf.buffer_id} "
                                     f"({buf.size} bytes)")
                buf.data[start:start + len(req.data)] = memoryview(req.data)
                pos = start + len(req.data)
        except (KeyError, ValueError) as e:
            return buffer_pb2.BufferWriteResponse(msg=str(e))
        self.memory.record_write(pos)
        return buffer_pb2.BufferWriteResponse()

    def read(self, request, context) -> Iterator:
        try:
            buf = self.memory.get(request.buffer_id)
        except KeyError as e:
            yield buffer_pb2.BufferReadResponse(msg=str(e))
            return
        end = request.end if request.end > request.start else buf.size
        for i in range(request.start, end, CHUNK):
            yield buffer_pb2.BufferReadResponse(data=buf.data[i:min(i + CHUNK, end)].tobytes())

    def freebuffer(self, request, context):
        try:
            self.memory.free(request.buffer_id)
        except KeyError as e:
            return buffer_pb2.FreeBufferResponse(msg=str(e))
        return buffer_pb2.FreeBufferResponse()

    def _known(self, buffer_id: str) -> str:
        try:
            self.memory.get(buffer_id)
        except KeyError as e:
            return str(e)
        return ""

    def flush(self, request, context):
        return buffer_pb2.FlushResponse(msg=self._known(request.buffer_id))

    def invalidate(self, request, context):
        return buffer_pb2.InvalidateResponse(msg=self._known(request.buffer_id))

    def physical_address(self, request, context):
        try:
            return buffer_pb2.AddressResponse(address=self.memory.get(request.buffer_id).address)
        except KeyError as e:
            return buffer_pb2.AddressResponse(msg=str(e))

    def virtual_address(self, request, context):
        try:
            buf = self.memory.get(request.buffer_id)
        except KeyError as e:
            return buffer_pb2.AddressResponse(msg=str(e))
        return buffer_pb2.AddressResponse(address=VIRTUAL_BASE + buf.address - self.memory.base)

    def cacheable(self, request, context):
        msg = self._known(request.buffer_id)
        return buffer_pb2.CacheableResponse(msg=msg, cacheable=not msg)
