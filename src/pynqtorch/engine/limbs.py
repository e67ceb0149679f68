"""Exact integer GEMM from a narrow kernel: operands split into signed digits ("limbs"), results recombined.

An integer ``x`` is written in balanced base ``2**d``: ``x = sum_i x_i 2**(d i)`` with every digit in
``[-2**(d-1), 2**(d-1) - 1]`` (int8 for ``d <= 8``). Values already in that range stay one limb (int8
inputs with an 8-bit kernel never split). ``A @ B = sum_ij (A_i @ B_j) 2**(d (i+j))``: each ``A_i @ B_j``
is a kernel GEMM whose K chunk per call is small enough that the accumulator provably cannot overflow
(``k_call * max|A_i| * max|B_j| <= 2**(acc_bits-1) - 1``), K chunks are summed on the host in int64, and
the weighted sum is recombined exactly by carry propagation, detecting results outside int64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..hw.description import Arith

_INT64_MAX = (1 << 63) - 1


@dataclass
class Operand:
    """Limbs of an integer operand, stacked for one GEMM.

    `stacked` is ``[B, L*R, C]`` (A side: limbs stacked along rows) or ``[B, R, L*C]`` (B side: along
    columns); `bound` is the largest ``|digit|`` possible, `count` the number of limbs ``L``.
    """

    stacked: torch.Tensor
    count: int
    bound: int
    digit_bits: int


def digit_bits(arith: Arith, tile_k: int) -> int:
    """Widest digit (<= operand_bits, <= 8) for which one K tile of worst-case digits cannot overflow."""
    acc_max = (1 << (arith.acc_bits - 1)) - 1
    for d in range(min(arith.operand_bits, 8), 0, -1):
        if tile_k * (1 << (2 * d - 2)) <= acc_max:
            return d
    raise ValueError(f"an accumulator of {arith.acc_bits} bits overflows on a K tile of {tile_k} even for "
                     "1-bit digits; this kernel cannot compute an exact GEMM")


def split(x: torch.Tensor, d: int, side: str, known: tuple[int, int] | None = None) -> Operand:
    """Limbs of integer `x` (``[B, R, C]``) in balanced base ``2**d``; `side` is "a" or "b" (stacking axis).

    `known` is a (min, max) range already known to hold, sparing a pass over the data.
    """
    lo_d, hi_d = -(1 << (d - 1)), (1 << (d - 1)) - 1
    if known is not None:
        lo, hi = known
    elif x.dtype == torch.int8 and d == 8:
        lo, hi = -128, 127
    elif x.numel() == 0:
        lo, hi = 0, 0
    else:
        mn, mx = torch.aminmax(x)
        lo, hi = int(mn), int(mx)
    if lo_d <= lo and hi <= hi_d:
        return Operand(x if x.dtype == torch.int8 else x.to(torch.int8), 1, max(-lo, hi), d)
    mask, half = (1 << d) - 1, 1 << (d - 1)
    rest = x.to(torch.int64)
    limbs = []
    while True:
        digit = ((rest & mask) ^ half) - half
        limbs.append(digit.to(torch.int8))
        # (rest - digit) >> d without overflowing at the int64 extremes.
        rest = (rest >> d) + (digit < 0)
        if not bool(rest.any()):
            break
    stacked = torch.cat(limbs, dim=1 if side == "a" else 2)
    return Operand(stacked, len(limbs), half, d)


def call_k(arith: Arith, tile_k: int, limit_k: int, a: Operand, b: Operand) -> int:
    """K of one kernel call: a multiple of the tile within `limit_k` whose accumulator cannot overflow."""
    acc_max = (1 << (arith.acc_bits - 1)) - 1
    safe = acc_max // max(a.bound * b.bound, 1)
    kc = min(safe, limit_k) // tile_k * tile_k
    if kc < tile_k:  # digit_bits() chose d so that one tile is always safe
        raise AssertionError(f"K chunk {kc} below tile {tile_k}")
    return kc


def check_host_sum(k: int, a: Operand, b: Operand) -> None:
    """The int64 host sum over K of one limb product cannot overflow (raise if it could)."""
    if k * a.bound * b.bound * min(a.count, b.count) > _INT64_MAX >> 2:
        raise OverflowError(f"GEMM with K={k} and digits up to {a.bound}x{b.bound} could overflow the int64 "
                            "host accumulator")


def combine(p: torch.Tensor, la: int, lb: int, m: int, n: int, d: int) -> torch.Tensor:
    """Exact ``sum_ij P_ij 2**(d (i+j))`` from the stacked limb products ``p`` (``[B, la*m, lb*n]``).

    Raises OverflowError if any entry lies outside int64.
    """
    bt = p.shape[0]
    blocks = p.view(bt, la, m, lb, n)
    # Digit sums per weight position s = i + j, then carry propagation to digits in [0, 2**d).
    top = 63 // d  # C = H * 2**(d*top) + low, low in [0, 2**(d*top)); C fits int64 iff H in the range below
    positions = max(la + lb - 1, top + 1)
    sums: list[torch.Tensor | None] = [None] * positions
    for i in range(la):
        for j in range(lb):
            pij = blocks[:, i, :, j, :]
            s = sums[i + j]
            sums[i + j] = pij.clone() if s is None else s.add_(pij)
    mask = (1 << d) - 1
    carry = torch.zeros((bt, m, n), dtype=torch.int64)
    digits = []
    for s in sums:
        t = carry if s is None else s.add_(carry)
        digits.append(t & mask)
        carry = t >> d
    # High part H from the top down, saturated: once |H| exceeds the range it can never come back.
    cap = 1 << 40
    h = carry
    for dig in reversed(digits[top:]):
        h = (h * (1 << d) + dig).clamp_(-cap, cap)
    h_lo, h_hi = -(1 << (63 - d * top)), (1 << (63 - d * top)) - 1
    if bool(((h < h_lo) | (h > h_hi)).any()):
        raise OverflowError("the exact integer result does not fit in int64")
    out = h << (d * top)
    for s in range(top):
        out |= digits[s] << (d * s)
    return out
