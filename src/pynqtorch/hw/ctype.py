"""C types of a description's arguments: plain C types and Xilinx AP integers, as numpy word types."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_NATIVE = {
    "signed char": "i1", "int8_t": "i1", "unsigned char": "u1", "uint8_t": "u1",
    "short": "i2", "int16_t": "i2", "unsigned short": "u2", "uint16_t": "u2",
    "int": "i4", "int32_t": "i4", "unsigned": "u4", "unsigned int": "u4", "uint32_t": "u4",
    "long long": "i8", "int64_t": "i8", "unsigned long long": "u8", "uint64_t": "u8",
    "float": "f4",
}
_AP = re.compile(r"ap_(u?)int\s*<\s*(\d+)\s*>")


@dataclass(frozen=True)
class CType:
    """A description's C type: `base` as spelled (no const/pointer), word `dtype`, pointer or scalar."""

    base: str
    dtype: np.dtype
    pointer: bool

    @property
    def native(self) -> bool:
        """True for plain C types, False for Xilinx AP types (`ap_int<W>`, `ap_uint<W>`)."""
        return self.base in _NATIVE


def parse_ctype(ctype: str) -> CType:
    """Parse a description's `ctype` such as ``int*``, ``const ap_uint<64>*`` or ``int``."""
    pointer = ctype.count("*")
    if pointer > 1:
        raise ValueError(f"C type {ctype!r}: only single pointers are supported")
    base = " ".join(ctype.replace("*", " ").replace("const", " ").replace("volatile", " ").split())
    if base in _NATIVE:
        return CType(base, np.dtype(_NATIVE[base]), bool(pointer))
    ap = _AP.fullmatch(base)
    if ap and int(ap.group(2)) in (8, 16, 32, 64):
        base = f"ap_{ap.group(1)}int<{ap.group(2)}>"
        return CType(base, np.dtype(f"{'u' if ap.group(1) else 'i'}{int(ap.group(2)) // 8}"), bool(pointer))
    raise ValueError(f"C type {ctype!r} is not supported: use one of {sorted(_NATIVE)} or "
                     "ap_int<W>/ap_uint<W> with W in 8, 16, 32, 64")
