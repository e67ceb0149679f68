"""One call of a `map` or `rows` kernel as memory and registers: sizes, buffer lengths, number format, AXI-lite.

Shared by the csim and board targets and the virtual board, so the memory image and register file of a call
are defined once. A call's *sizes* are ``{"n"}`` (map) or ``{"rows", "cols"}`` (rows); buffers hold one word
per element in the description's I/O format (float32 bits, or raw ``ap_fixed``/int8 integers).
"""

from __future__ import annotations

import struct

import numpy as np

from .families import OUTPUT_ROLES, BlockArg, BlockDescription
from .packing import parse_ctype


def check_sizes(desc: BlockDescription, sizes: dict[str, int]) -> dict[str, int]:
    """The sizes of one call, checked against the description's limits (a bad call never reaches a kernel)."""
    limits = {"n": desc.limits.block} if desc.op == "map" else {"rows": desc.limits.max_rows,
                                                                  "cols": desc.limits.max_cols}
    if set(sizes) != set(limits):
        raise ValueError(f"kernel {desc.name}: a call takes sizes {sorted(limits)}, got {sorted(sizes)}")
    for k, top in limits.items():
        v = sizes[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= top:
            raise ValueError(f"kernel {desc.name}: {k}={v!r} must be an integer from 1 to {top}")
    return {k: int(v) for k, v in sizes.items()}


def max_sizes(desc: BlockDescription) -> dict[str, int]:
    """The largest call the description allows."""
    if desc.op == "map":
        return {"n": desc.limits.block}
    return {"rows": desc.limits.max_rows, "cols": desc.limits.max_cols}


def elements(desc: BlockDescription, role: str, sizes: dict[str, int]) -> int:
    """Elements (= words) of buffer `role` in a call of `sizes`."""
    if desc.op == "map":
        return sizes["n"]
    return {"weight": sizes["cols"], "bias": sizes["cols"], "mean": sizes["rows"],
            "rstd": sizes["rows"]}.get(role, sizes["rows"] * sizes["cols"])


def is_output(arg: BlockArg) -> bool:
    return arg.role in OUTPUT_ROLES


def word_dtype(desc: BlockDescription, arg: BlockArg) -> np.dtype:
    return parse_ctype(arg.ctype).dtype


def format_range(desc: BlockDescription) -> tuple[float, float] | None:
    """Smallest and largest value the I/O format holds (None for float32)."""
    step = desc.io.step
    if step is None:
        return None
    half = 1 << (desc.io.bits - 1)
    return -half * step, (half - 1) * step


def encode(desc: BlockDescription, arg: BlockArg, x: np.ndarray) -> np.ndarray:
    """Words of input buffer `arg` holding float32 values `x` (fixed formats: round to nearest; the caller
    keeps values inside `format_range`)."""
    dt = word_dtype(desc, arg)
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    step = desc.io.step
    if step is None:
        return flat.view(dt) if dt.itemsize == 4 else flat.astype(dt)
    lo, hi = format_range(desc)  # type: ignore[misc]
    return np.rint(np.clip(flat.astype(np.float64), lo, hi) / step).astype(dt)


def decode(desc: BlockDescription, arg: BlockArg, words: np.ndarray, count: int) -> np.ndarray:
    """float32 values of the first `count` words of output buffer `arg`."""
    w = np.asarray(words).reshape(-1)[:count]
    step = desc.io.step
    if step is None:
        return w.view(np.float32).copy() if w.dtype.kind != "f" else w.astype(np.float32)
    bits = desc.io.bits
    raw = w.astype(np.int64) & ((1 << bits) - 1)
    raw = np.where(raw >= 1 << (bits - 1), raw - (1 << bits), raw)  # sign-extend the W-bit field
    return (raw * step).astype(np.float32)


def _scalar_bytes(arg: BlockArg, value: float) -> bytes:
    return struct.pack("<f", value) if parse_ctype(arg.ctype).dtype.kind == "f" else struct.pack("<I", int(value))


def register_values(desc: BlockDescription, addresses: dict[str, int],
                    scalars: dict[str, float]) -> dict[int, bytes]:
    """Register offset -> little-endian bytes to write before ap_start: buffer addresses by arg name, scalars
    (sizes, eps) by role."""
    out: dict[int, bytes] = {}
    for arg in desc.args:
        if arg.pointer:
            out[arg.offset_int] = struct.pack("<Q", addresses[arg.name])
        else:
            out[arg.offset_int] = _scalar_bytes(arg, scalars[arg.role])
    return out


def decode_registers(desc: BlockDescription, read_u32) -> tuple[dict[str, int], dict[str, float]]:
    """Buffer addresses by arg name and scalars by role from a register file read with ``read_u32(offset)``."""
    addresses, scalars = {}, {}
    for arg in desc.args:
        lo = read_u32(arg.offset_int)
        if arg.pointer:
            addresses[arg.name] = lo | (read_u32(arg.offset_int + 4) << 32)
        elif parse_ctype(arg.ctype).dtype.kind == "f":
            scalars[arg.role] = struct.unpack("<f", struct.pack("<I", lo))[0]
        else:
            scalars[arg.role] = struct.unpack("<i", struct.pack("<I", lo))[0]
    return addresses, scalars
