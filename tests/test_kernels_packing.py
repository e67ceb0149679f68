"""Host-side packing: words for every layout/pack round-trip to the logical int8 operands."""

from __future__ import annotations

import numpy as np
import pytest

from pynqtorch.hw.description import Arg
from pynqtorch.hw.kernels import find_kernel
from pynqtorch.hw.packing import call_dims, pack_operand, parse_ctype, unpack_result, word_dtype, words_for


def _arg(role: str, ctype: str, pack: int, layout: str) -> Arg:
    return Arg(name=role, role=role, interface="m_axi", ctype=ctype, offset="0x10", pack=pack, layout=layout)


def _unpack_operand(words: np.ndarray, arg: Arg, rows: int, cols: int) -> np.ndarray:
    """Inverse of pack_operand written independently (lane t of a word = bits 8t..8t+7)."""
    w = words.reshape(rows, -1).astype(np.uint64) if words.dtype.kind == "u" else \
        words.reshape(rows, -1).view(np.dtype(f"u{words.dtype.itemsize}")).astype(np.uint64)
    lanes = [((w >> np.uint64(8 * t)) & np.uint64(0xFF)).astype(np.uint8) for t in range(arg.pack)]
    return np.stack(lanes, axis=-1).reshape(rows, cols).view(np.int8)


@pytest.mark.parametrize(("role", "ctype", "pack", "layout"), [
    ("a", "int*", 1, "mk"), ("b", "int*", 1, "kn"), ("b", "const int*", 1, "nk"),
    ("a", "ap_uint<64>*", 8, "mk"), ("b", "ap_uint<64>*", 8, "nk"), ("b", "ap_uint<64>*", 8, "kn"),
    ("a", "uint32_t*", 4, "mk"), ("b", "ap_int<32>*", 4, "nk"), ("a", "int*", 2, "mk"),
    ("b", "long long*", 8, "kn"), ("a", "ap_int<8>*", 1, "mk"),
])
def test_pack_round_trip(role: str, ctype: str, pack: int, layout: str) -> None:
    rng = np.random.default_rng(1)
    m, n, k = 3, 24, 40
    x = rng.integers(-128, 128, (m, k) if role == "a" else (k, n), dtype=np.int8)
    x[0, 0], x[-1, -1] = -128, 127
    arg = _arg(role, ctype, pack, layout)
    words = pack_operand(x, arg)
    assert words.dtype == word_dtype(arg) == parse_ctype(ctype).dtype
    assert words.ndim == 1 and words.size == words_for(arg, m, n, k)
    logical = x.T if layout == "nk" else x
    if pack == 1:
        assert np.array_equal(words.astype(np.int64) & 0xFF, logical.reshape(-1).view(np.uint8))
    back = _unpack_operand(words, arg, *logical.shape) if pack > 1 else \
        (words.astype(np.int64) & 0xFF).astype(np.uint8).view(np.int8).reshape(logical.shape)
    assert np.array_equal(back, logical)


def test_packed_lane_order_matches_kernel_header() -> None:
    """gemm_i8_packed.hpp: word i*k/8 + t holds A[i][8t..8t+7] with A[i][8t] in bits 7:0."""
    desc = find_kernel("gemm_i8_packed").desc
    a = np.arange(16, dtype=np.int8).reshape(1, 16)
    words = pack_operand(a, desc.arg("a"))
    assert words.tolist() == [0x0706050403020100, 0x0F0E0D0C0B0A0908]
    b = np.array([[1, -1], [2, -2], [3, -3], [4, -4], [5, -5], [6, -6], [7, -7], [-128, 127]], np.int8)
    bw = pack_operand(b, desc.arg("b"))  # nk: column j of B is one word
    assert bw.tolist() == [0x8007060504030201, 0x7FF9FAFBFCFDFEFF]


def test_unpack_result_signed_and_sized() -> None:
    arg = _arg("c", "int*", 1, "mn")
    words = np.array([-(2 ** 31), 2 ** 31 - 1, 5, -7, 99], np.int32)
    out = unpack_result(words, arg, 2, 2)
    assert out.dtype == np.int64 and out.tolist() == [[-(2 ** 31), 2 ** 31 - 1], [5, -7]]
    uarg = _arg("c", "uint32_t*", 1, "mn")
    assert unpack_result(words.view(np.uint32), uarg, 2, 2).tolist() == out.tolist()
    with pytest.raises(ValueError, match="cannot hold a 3x2 result"):
        unpack_result(words, arg, 3, 2)


def test_bad_operands_are_rejected() -> None:
    arg = _arg("a", "ap_uint<64>*", 8, "mk")
    with pytest.raises(TypeError, match="2-D int8"):
        pack_operand(np.zeros((2, 8), np.int16), arg)
    with pytest.raises(ValueError, match="do not split into words of pack=8"):
        pack_operand(np.zeros((2, 12), np.int8), arg)
    with pytest.raises(ValueError, match="do not fit"):
        pack_operand(np.zeros((2, 8), np.int8), _arg("a", "int*", 8, "mk"))
    with pytest.raises(ValueError, match="layout 'nk' is not one of"):
        pack_operand(np.zeros((2, 8), np.int8), _arg("a", "int*", 1, "nk"))
    with pytest.raises(ValueError, match="not supported"):
        parse_ctype("long*")
    with pytest.raises(ValueError, match="a buffer needs a pointer"):
        words_for(_arg("a", "int", 1, "mk"), 1, 1, 1)


def test_call_dims_follow_the_description() -> None:
    packed = find_kernel("gemm_i8_packed").desc
    assert call_dims(packed, 1, 32, 8) == {"m": 1, "n": 32, "k": 8}
    assert call_dims(packed, 1024, 256, 1024)["k"] == 1024
    for bad, msg in [((1, 48, 8), "n=48 must be a positive multiple of 32 up to 256"),
                     ((1, 32, 1032), "k=1032"), ((0, 32, 8), "m=0"), ((1025, 32, 8), "m=1025")]:
        with pytest.raises(ValueError, match=msg):
            call_dims(packed, *bad)
    dsp = find_kernel("gemm_i8_dsp").desc
    with pytest.raises(ValueError, match="fixed tiles of m=256"):
        call_dims(dsp, 128, 256, 256)
