"""The AXI-lite side of an HLS kernel as the description defines it: control bits, word types, register values.

Shared by the board target (which writes these registers) and the virtual board (which decodes them), so
both sides read one definition of where each argument lives.
"""

from __future__ import annotations

import struct

from .description import Arg, Description

# ap_ctrl bits of an HLS block-level `ap_ctrl_hs` interface.
AP_START = 0x1
AP_DONE = 0x2
AP_IDLE = 0x4
AP_READY = 0x8
# The AXI-lite window of an HLS IP is at least this large.
MIN_REG_SPACE = 0x40


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


def handoff_registers(desc: Description) -> dict[str, tuple[int, str]]:
    """Register name -> (offset, description) as Vivado HLS names them in a .hwh: ``CTRL``, then a pointer
    argument ``x`` as ``x_1`` (low word) and ``x_2`` (high word), a scalar ``x`` as ``x``."""
    regs = {"CTRL": (desc.control.ap_ctrl_int, "Control signals")}
    for arg in desc.args:
        if arg.interface == "m_axi":
            regs[f"{arg.name}_1"] = (arg.offset_int, f"Data signal of {arg.name} (low word)")
            regs[f"{arg.name}_2"] = (arg.offset_int + 4, f"Data signal of {arg.name} (high word)")
        else:
            regs[arg.name] = (arg.offset_int, f"Data signal of {arg.name}")
    return regs


def register_span(desc: Description) -> int:
    """Bytes of AXI-lite address space the description's registers occupy (rounded up to a power of two)."""
    end = max([desc.control.ap_ctrl_int + 4] + [a.offset_int + (8 if a.interface == "m_axi" else 4)
                                                      for a in desc.args])
    span = MIN_REG_SPACE
    while span < end:
        span *= 2
    return span
