"""The AXI-lite side of an HLS kernel as the description defines it: control bits, word types, register values.

Shared by the board target (which writes these registers) and the virtual board (which decodes them), so
both sides read one definition of where each argument lives.
"""

from __future__ import annotations

import re
import struct

import numpy as np

from ..hw.description import Arg, Description

# ap_ctrl bits of an HLS block-level `ap_ctrl_hs` interface.
AP_START = 0x1
AP_DONE = 0x2
AP_IDLE = 0x4
AP_READY = 0x8
# The AXI-lite window of an HLS IP is at least this large.
MIN_REG_SPACE = 0x40

_C_INTS = {
    "char": "i1", "signed char": "i1", "int8_t": "i1", "unsigned char": "u1", "uint8_t": "u1",
    "short": "i2", "int16_t": "i2", "unsigned short": "u2", "uint16_t": "u2",
    "int": "i4", "int32_t": "i4", "unsigned": "u4", "unsigned int": "u4", "uint32_t": "u4",
    "long long": "i8", "int64_t": "i8", "unsigned long long": "u8", "uint64_t": "u8",
}
_AP_INT = re.compile(r"ap_(u?)int<\s*(\d+)\s*>")


def word_dtype(arg: Arg) -> np.dtype:
    """The little-endian numpy dtype of one memory word of pointer argument `arg` (from its C type)."""
    base = arg.ctype.replace("const", " ").replace("*", " ").replace("volatile", " ")
    base = " ".join(base.split())
    if base in _C_INTS:
        return np.dtype("<" + _C_INTS[base])
    ap = _AP_INT.fullmatch(base)
    if ap and int(ap.group(2)) in (8, 16, 32, 64):
        return np.dtype(f"<{'u' if ap.group(1) else 'i'}{int(ap.group(2)) // 8}")
    raise ValueError(f"argument {arg.name!r}: C type {arg.ctype!r} is not a memory word type the board supports "
                     f"(use one of {sorted(_C_INTS)} or ap_[u]int<8|16|32|64>, as a pointer)")


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


def register_span(desc: Description) -> int:
    """Bytes of AXI-lite address space the description's registers occupy (rounded up to a power of two)."""
    end = max([int(desc.control.ap_ctrl, 16) + 4] + [a.offset_int + (8 if a.interface == "m_axi" else 4)
                                                      for a in desc.args])
    span = MIN_REG_SPACE
    while span < end:
        span *= 2
    return span
