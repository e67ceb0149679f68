"""The AXI-lite side of an HLS kernel as the description defines it: control bits, word types, register values.

Shared by the board target (which writes these registers) and the virtual board (which decodes them), so
both sides read one definition of where each argument lives.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from .description import Arg, Description
from .hwh import hls_name, hls_registers

# ap_ctrl bits of an HLS block-level `ap_ctrl_hs` interface.
AP_START = 0x1
AP_DONE = 0x2
AP_IDLE = 0x4
AP_READY = 0x8
# The interrupt registers Vitis HLS puts after ap_ctrl: global enable, IP enable (bit 0: ap_done), IP status
# (toggle on write).
GIER, IP_IER, IP_ISR = 0x4, 0x8, 0xC
# The AXI-lite window of an HLS IP is at least this large.
MIN_REG_SPACE = 0x40


def wait_done(read_ctrl: Callable[[], int], timeout_s: float) -> bool:
    """Poll ap_ctrl until ap_done (or idle and not started); False when `timeout_s` passes first. Polls
    back to back at first, then every 0.2 ms."""
    deadline = time.monotonic() + timeout_s
    polls = 0
    while True:
        ctrl = read_ctrl()
        if ctrl & AP_DONE or (ctrl & AP_IDLE and not ctrl & AP_START):
            return True
        if time.monotonic() > deadline:
            return False
        polls += 1
        if polls > 64:
            time.sleep(0.0002)


def pointer_args(desc: Description) -> list[Arg]:
    """The m_axi arguments (each takes a 64-bit buffer address in two AXI-lite words)."""
    return [a for a in desc.args if a.interface == "m_axi"]


def register_values(desc: Description, addresses: dict[str, int], m: int, n: int, k: int) -> dict[int, bytes]:
    """Register offset -> little-endian bytes to write before ap_start, for buffer `addresses` by arg name."""
    shape = {"m": m, "n": n, "k": k}
    out: dict[int, bytes] = {}
    for arg in desc.args:
        if arg.interface == "m_axi":
            out[arg.offset_int] = struct.pack("<Q", addresses[arg.name])
        else:
            out[arg.offset_int] = struct.pack("<I", shape[arg.role])
    return out


def decode_registers(desc: Description, read_u32) -> tuple[dict[str, int], dict[str, int]]:
    """Buffer addresses by arg name and dims m/n/k from a register file read with ``read_u32(offset)``.

    Fixed dims come from the description's tile; runtime dims from their scalar registers.
    """
    addresses = {a.name: read_u32(a.offset_int) | (read_u32(a.offset_int + 4) << 32) for a in pointer_args(desc)}
    shape = {d: getattr(desc.tile, d) for d in ("m", "n", "k")}
    for arg in desc.args:
        if arg.interface == "s_axilite":
            shape[arg.role] = read_u32(arg.offset_int)
    return addresses, shape


# The block-level registers Vitis HLS puts before the arguments: name -> (offset, description, fields), a
# field being (name, first bit, width).
Field = tuple[str, int, int]
_BLOCK_REGISTERS: dict[str, tuple[int, str, tuple[Field, ...]]] = {
    "CTRL": (0x0, "Control signals", (("AP_START", 0, 1), ("AP_DONE", 1, 1), ("AP_IDLE", 2, 1), ("AP_READY", 3, 1),
                                      ("RESERVED_1", 4, 3), ("AUTO_RESTART", 7, 1), ("RESERVED_2", 8, 24))),
    "GIER": (GIER, "Global Interrupt Enable Register", (("Enable", 0, 1), ("RESERVED", 1, 31))),
    "IP_IER": (IP_IER, "IP Interrupt Enable Register", (("CHAN0_INT_EN", 0, 1), ("CHAN1_INT_EN", 1, 1),
                                                      ("RESERVED", 2, 30))),
    "IP_ISR": (IP_ISR, "IP Interrupt Status Register", (("CHAN0_INT_ST", 0, 1), ("CHAN1_INT_ST", 1, 1),
                                                      ("RESERVED", 2, 30))),
}


def handoff_registers(desc: Description) -> dict[str, tuple[int, str, tuple[Field, ...]]]:
    """The register map Vitis HLS writes into a .hwh for `desc`: ``CTRL``/``GIER``/``IP_IER``/``IP_ISR``, then
    each argument under its HLS names (`hw.hwh.hls_registers`: ``x_1``/``x_2`` for a pointer, ``x`` for a
    scalar, ``out_r`` for the reserved word ``out``), each with its FIELDS as Vivado nests them."""
    regs = dict(_BLOCK_REGISTERS)
    regs["CTRL"] = (desc.control.ap_ctrl_int, *_BLOCK_REGISTERS["CTRL"][1:])
    for arg in desc.args:
        names = hls_registers(arg.name, pointer=arg.interface == "m_axi")
        for i, name in enumerate(names):
            regs[name] = (arg.offset_int + 4 * i, f"Data signal of {hls_name(arg.name)}", ((hls_name(arg.name), 0, 32),))
    return regs


def register_span(desc: Description) -> int:
    """Bytes of AXI-lite address space the description's registers occupy (rounded up to a power of two)."""
    end = max([desc.control.ap_ctrl_int + 4] + [a.offset_int + (8 if a.interface == "m_axi" else 4)
                                                      for a in desc.args])
    span = MIN_REG_SPACE
    while span < end:
        span *= 2
    return span
