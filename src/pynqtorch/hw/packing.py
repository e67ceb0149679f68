"""Host-side operand packing driven by a kernel description: the words each buffer of one call holds.

The C-simulation and board targets both turn an int8 tile into the words the kernel reads with
`pack_operand`, size buffers with `words_for`, and read the accumulator back with `unpack_result`, so the
memory image of a call is defined here once. Word layout: operand ``t`` of a word sits in bits
``8t .. 8t+7`` (little-endian lanes), words are in row-major order of the argument's layout.
"""

from __future__ import annotations

import numpy as np

from .ctype import CType, parse_ctype
from .description import Arg, Description


def word_dtype(arg: Arg) -> np.dtype:
    """The numpy dtype of one word (pointer argument) or of the value (scalar argument) of `arg`."""
    return parse_ctype(arg.ctype).dtype


def call_dims(desc: Description, m: int, n: int, k: int) -> dict[str, int]:
    """Check that one call of `desc` takes an m×k by k×n problem and return the dims by name.

    Fixed dims must equal the tile; runtime dims must be positive multiples of the tile up to ``max``.
    """
    dims = {"m": m, "n": n, "k": k}
    for d, v in dims.items():
        tile = getattr(desc.tile, d)
        if d not in desc.runtime_dims:
            if v != tile:
                raise ValueError(f"kernel {desc.name}: {d}={v} but this kernel computes fixed tiles of {d}={tile}")
        elif v < 1 or v % tile or v > desc.dim_limit(d):
            raise ValueError(f"kernel {desc.name}: {d}={v} must be a positive multiple of {tile} "
                             f"up to {desc.dim_limit(d)}")
    return dims


def _pointer(arg: Arg) -> CType:
    ct = parse_ctype(arg.ctype)
    if not ct.pointer:
        raise ValueError(f"argument {arg.name!r} ({arg.role}) has C type {arg.ctype!r}: a buffer needs a pointer")
    if arg.pack * 8 > ct.dtype.itemsize * 8:
        raise ValueError(f"argument {arg.name!r}: pack={arg.pack} int8 operands do not fit a {arg.ctype!r} word")
    return ct


def words_for(arg: Arg, m: int, n: int, k: int) -> int:
    """Number of words in the buffer of pointer argument `arg` for one m×k by k×n call."""
    _pointer(arg)
    elems = {"a": m * k, "b": k * n, "c": m * n}.get(arg.role)
    if elems is None:
        raise ValueError(f"argument {arg.name!r} has role {arg.role!r}, not a buffer (a, b or c)")
    inner = {"a": k, "b": n if arg.layout == "kn" else k, "c": n}[arg.role]
    if inner % arg.pack:
        raise ValueError(f"argument {arg.name!r}: its rows of {inner} operands do not split into words of "
                         f"pack={arg.pack}")
    return elems // arg.pack


_OPERAND_LAYOUTS = {"a": ("mk",), "b": ("kn", "nk")}


def pack_operand(x: np.ndarray, arg: Arg) -> np.ndarray:
    """Words (1-D, dtype of the arg's C type) holding int8 operand `x`: ``a`` as M×K, ``b`` as K×N."""
    if arg.role not in _OPERAND_LAYOUTS:
        raise ValueError(f"argument {arg.name!r} has role {arg.role!r}; only a and b are packed operands")
    if arg.layout not in _OPERAND_LAYOUTS[arg.role]:
        raise ValueError(f"argument {arg.name!r}: layout {arg.layout!r} is not one of "
                         f"{_OPERAND_LAYOUTS[arg.role]} for role {arg.role!r}")
    if not isinstance(x, np.ndarray) or x.dtype != np.int8 or x.ndim != 2:
        what = f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"argument {arg.name!r}: expected a 2-D int8 array, got {what}")
    ct = _pointer(arg)
    rows = np.ascontiguousarray(x.T if arg.layout == "nk" else x)
    r, cols = rows.shape
    if cols % arg.pack:
        raise ValueError(f"argument {arg.name!r}: rows of {cols} operands (layout {arg.layout}) do not split "
                         f"into words of pack={arg.pack}")
    if arg.pack == 1:
        return rows.astype(ct.dtype).reshape(-1)
    if arg.pack * 8 == ct.dtype.itemsize * 8:
        # Little-endian lanes: the bytes of a row, read as words, are exactly the packed words.
        return rows.view(ct.dtype.newbyteorder("<")).astype(ct.dtype).reshape(-1)
    lanes = rows.view(np.uint8).reshape(r, cols // arg.pack, arg.pack).astype(np.uint64)
    shifts = np.arange(arg.pack, dtype=np.uint64) * np.uint64(8)
    return (lanes << shifts).sum(axis=-1, dtype=np.uint64).astype(ct.dtype).reshape(-1)


def unpack_result(words: np.ndarray, arg: Arg, m: int, n: int) -> np.ndarray:
    """The m×n accumulator (int64) from the words of result argument `arg` (role c, layout mn, pack 1)."""
    if arg.role != "c" or arg.layout != "mn" or arg.pack != 1:
        raise ValueError(f"argument {arg.name!r}: results must be role c, layout 'mn', pack 1 "
                         f"(got role {arg.role!r}, layout {arg.layout!r}, pack {arg.pack})")
    ct = _pointer(arg)
    if words.size < m * n:
        raise ValueError(f"argument {arg.name!r}: {words.size} words cannot hold a {m}x{n} result")
    flat = np.asarray(words).reshape(-1)[: m * n]
    if flat.dtype.itemsize != ct.dtype.itemsize:
        raise TypeError(f"argument {arg.name!r}: words of {flat.dtype} but C type {arg.ctype!r} "
                        f"has {ct.dtype.itemsize}-byte words")
    # The accumulator is signed: reinterpret unsigned words of the same width.
    signed = flat.view(np.dtype(f"i{ct.dtype.itemsize}"))
    return signed.astype(np.int64).reshape(m, n)
