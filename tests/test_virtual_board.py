"""The virtual PYNQ-Z2 as the unmodified pynq >= 4.0 client sees it over real gRPC on 127.0.0.1."""

from __future__ import annotations

import struct

import numpy as np
import pynq
import pytest
from pynq.pl_server.embedded_device import bit2bin
from pynq.pl_server.remote_device import RemoteDevice

from board_fixtures import BoardProcess, Boards
from pynqtorch.hw.kernels import find_kernel
from pynqtorch.hw.overlay import find_overlay
from pynqtorch.hw.packing import pack_operand, unpack_result
from pynqtorch.hw.registers import AP_DONE, AP_IDLE, AP_START
from pynqtorch.sim.handoff import placeholder_bit
from pynqtorch.targets.base import golden_gemm


def _device(vb) -> RemoteDevice:
    return RemoteDevice(0, vb.host, vb.port)


def test_client_identifies_the_board(boards: Boards) -> None:
    vb = boards.start("gemm_single")
    dev = _device(vb)
    assert (dev.arch, dev.name) == ("armv7l", "Pynq-Z2")
    assert vb.design == "gemm_single"


def test_buffers_round_trip_and_are_counted(boards: Boards) -> None:
    vb = boards.start(None)
    dev = _device(vb)
    bufs = [dev.allocate((1000,), np.int32) for _ in range(3)]
    assert vb.live_buffers == 3
    addresses = [b.physical_address for b in bufs]
    assert len(set(addresses)) == 3 and all(a % 4096 == 0 for a in addresses)
    data = np.arange(1000, dtype=np.int32) * -7
    bufs[0][:] = data
    bufs[0].flush()
    bufs[0][:] = 0
    bufs[0].invalidate()
    assert np.array_equal(bufs[0], data)
    for b in bufs:
        b.freebuffer()
    assert vb.live_buffers == 0
    with pytest.raises(RuntimeError, match="no live buffer"):
        bufs[1].physical_address  # noqa: B018


def test_mmio_outside_every_ip_is_refused(boards: Boards) -> None:
    vb = boards.start("gemm_single")
    with pytest.raises(RuntimeError, match="no IP of the loaded design .gemm_single. maps 0x43c00000"):
        pynq.MMIO(0x43C0_0000, 0x1000, device=_device(vb))


def test_ap_start_runs_the_csim_kernel_on_buffer_memory(boards: Boards, packed_overlay) -> None:
    """Program the registers by hand, as a pynq notebook would, and read the result back."""
    vb = boards.start(packed_overlay)
    dev = _device(vb)
    desc = find_kernel("gemm_i8_packed").desc
    rng = np.random.default_rng(1)
    m, n, k = 3, 32, 24
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    wa, wb = pack_operand(a, desc.arg("a")), pack_operand(b, desc.arg("b"))
    ba, bb, bc = dev.allocate(wa.shape, wa.dtype), dev.allocate(wb.shape, wb.dtype), dev.allocate((m * n,), np.int32)
    ba[:], bb[:] = wa, wb
    ba.flush()
    bb.flush()
    mmio = pynq.MMIO(0x4001_0000, 0x10000, device=dev)  # the second IP
    for role, buf in (("a", ba), ("b", bb), ("c", bc)):
        mmio.write(desc.arg(role).offset_int, struct.pack("<Q", buf.physical_address))
    for role, v in (("m", m), ("n", n), ("k", k)):
        mmio.write(desc.arg(role).offset_int, v)
    assert mmio.read(0) & AP_IDLE
    mmio.write(0, AP_START)
    while not (ctrl := mmio.read(0)) & AP_DONE:
        pass
    assert ctrl & AP_IDLE and not mmio.read(0) & AP_DONE  # ap_done is clear-on-read
    bc.invalidate()
    assert np.array_equal(unpack_result(np.asarray(bc), desc.arg("c"), m, n), golden_gemm(a, b, desc.arith))
    assert vb.fabric.stats.completed == 1 and not vb.fabric.stats.errors


def test_kernel_reading_outside_buffers_never_completes(boards: Boards, packed_overlay) -> None:
    vb = boards.start(packed_overlay)
    mmio = pynq.MMIO(0x4000_0000, 0x10000, device=_device(vb))
    mmio.write(0x34, 1)
    mmio.write(0x3C, 16)
    mmio.write(0x44, 8)  # buffer address registers left at 0: no buffer lives there
    mmio.write(0, AP_START)
    for _ in range(200):
        if vb.fabric.stats.errors:
            break
        mmio.read(0)
    assert "outside every live buffer" in vb.fabric.stats.errors[0]
    assert not mmio.read(0) & AP_DONE


def test_bitstream_download_programs_the_fabric(boards: Boards) -> None:
    """The file protocol pynq's RemoteDevice.download uses: .bin into /lib/firmware, flags, firmware node."""
    vb = boards.start("gemm_single")
    dev = _device(vb)
    dev.write_file("/lib/firmware/gemm_dual.bin", bit2bin(placeholder_bit(find_overlay("gemm_dual"))))
    dev.write_file("/sys/class/fpga_manager/fpga0/flags", b"0")
    dev.write_file("/sys/class/fpga_manager/fpga0/firmware", b"gemm_dual.bin")
    assert vb.design == "gemm_dual" and [ip.spec.instance for ip in vb.fabric.ips] == [
        "gemm_i8_dsp_0", "gemm_i8_fabric_0"]
    dev.write_file("/lib/firmware/other.bin", b"\x00" * 64)  # not a placeholder bitstream
    dev.write_file("/sys/class/fpga_manager/fpga0/firmware", b"other.bin")
    assert vb.design is None and vb.fabric.ips == []


def test_cli_serves_the_board(board_process: type[BoardProcess]) -> None:
    proc = board_process("--overlay", "gemm_single")
    host, port = proc.address.split(":")
    assert host == "127.0.0.1"
    dev = RemoteDevice(0, host, int(port))
    assert dev.name == "Pynq-Z2"
    assert pynq.MMIO(0x4000_0000, 0x10000, device=dev).read(0) & AP_IDLE


def test_cli_rejects_unknown_overlay(board_process: type[BoardProcess]) -> None:
    with pytest.raises(RuntimeError, match="unknown overlay 'nope'"):
        board_process("--overlay", "nope")


def test_programming_the_pl_prepares_every_ip(packed_overlay) -> None:
    """The IPs exist once the fabric is programmed: their C-sim libraries are made then (a first call never waits
    for a build inside its ap_done timeout), once per IP, and a library that cannot be made is logged, not raised."""
    from pynqtorch.sim.server import VirtualBoard, _csim_library

    made: list[str] = []

    def library(kernel, copy):
        made.append(kernel.desc.name)
        return _csim_library(kernel, copy)

    vb = VirtualBoard(packed_overlay, library=library)
    assert made == ["gemm_i8_packed", "gemm_i8_packed"]
    vb.load(packed_overlay)  # programming the same design again keeps the IPs' libraries
    assert len(made) == 2

    def broken(kernel, copy):
        raise RuntimeError("no compiler")

    bad = VirtualBoard(packed_overlay, library=broken)  # calls of its IPs fail as before; loading does not
    assert bad.design is not None
