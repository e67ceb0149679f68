"""The LSTM and GRU cells of float32 recurrent layers on zynq, defined by IEEE float32 operations.

sigmoid and tanh are not torch's (whose vector and scalar code differ in the last bits) but fixed formulas every
machine computes alike: exp by Cody-Waite reduction with ln 2 and Cephes' degree-5 polynomial (argument clamped to
[-87, 88]); ``sigmoid(x) = 1 / (1 + exp(-x))``; tanh by Cephes' odd polynomial for ``|x| < 0.625``, else
``(e - 1) / (e + 1)`` with ``e = exp(2|x|)`` and x's sign. They agree with torch's within a few ulp (tested). The
native pass (`hostops.rnn_cell`, and the fused steps of `hostops.RowsGemm.steps`) computes the same operations in
the same order, so every target gives the same bits with or without it (tested bit for bit); these torch ops are
the definition and the fallback without a C++ compiler.
"""

from __future__ import annotations

import torch

from .. import hostops

_ROUND = 12582912.0  # 1.5 * 2**23: y + _ROUND holds round(y) in its low mantissa bits
_POW2_BIAS = 0x4B400000 - 127  # _ROUND's bit pattern less the exponent bias
_EXP_POLY = (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
_TANH_POLY = (2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1)


def exp(x: torch.Tensor) -> torch.Tensor:
    """exp of float32 `x` (within ~2 ulp; saturating at exp(-87) and exp(88), NaN stays NaN)."""
    x = x.clamp(-87.0, 88.0)
    t = x * 1.44269504088896341 + _ROUND
    nf = t - _ROUND
    r = (x - nf * 0.693359375) - nf * -2.12194440e-4
    p = torch.full_like(r, 1.9875691500e-4)
    for coef in _EXP_POLY:
        p = p * r + coef
    pow2 = (t.view(torch.int32) - _POW2_BIAS).bitwise_left_shift_(23).view(torch.float32)
    return ((p * (r * r) + r) + 1.0) * pow2


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.reciprocal(exp(-x) + 1.0)


def tanh(x: torch.Tensor) -> torch.Tensor:
    z = x * x
    p = torch.full_like(z, -5.70498872745e-3)
    for coef in _TANH_POLY:
        p = p * z + coef
    small = (p * z) * x + x
    a = x.abs()
    e = exp(a + a)
    return torch.where(a < 0.625, small, torch.copysign((e - 1.0) / (e + 1.0), x))


def lstm(gates: torch.Tensor, c: torch.Tensor, h_out: torch.Tensor) -> None:
    """One LSTM step from `gates` ``[B, 4H]`` (i, f, g, o: both products, both biases): ``c = sigmoid(f) * c +
    sigmoid(i) * tanh(g)`` in place, ``h_out = sigmoid(o) * tanh(c)``."""
    i, f, g, o = gates.chunk(4, 1)
    c.copy_(sigmoid(f) * c + sigmoid(i) * tanh(g))
    torch.mul(sigmoid(o), tanh(c), out=h_out)


def gru(gx: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, h_out: torch.Tensor) -> None:
    """One GRU step from the input projection `gx` and the recurrent product `gh` (``[B, 3H]``: r, z, n, each with
    its bias) and the previous `h`: ``h_out = (h - n) * z + n`` with ``r = sigmoid(xr + hr)``, ``z = sigmoid(xz +
    hz)``, ``n = tanh(hn * r + xn)``."""
    xr, xz, xn = gx.chunk(3, 1)
    hr, hz, hn = gh.chunk(3, 1)
    r, z = sigmoid(xr + hr), sigmoid(xz + hz)
    n = tanh(hn * r + xn)
    torch.mul(h - n, z, out=h_out).add_(n)


def step(gx: torch.Tensor, gates: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None, h_out: torch.Tensor) -> None:
    """One step of the LSTM (`c` given; `gates` include the input projection) or GRU cell (`c` None; `gx` the input
    projection, `gates` the recurrent product): natively when `hostops` takes it, else with the torch ops above."""
    if hostops.rnn_cell(c is None, gx, gates, h, c, h_out):
        return
    if c is None:
        gru(gx, gates, h, h_out)
    else:
        lstm(gates, c, h_out)
