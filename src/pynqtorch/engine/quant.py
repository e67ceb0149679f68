"""Quantization of float operands to symmetric integers: schemes, the active config, scale computation.

Symmetric, no zero point: ``q = round(x / s)`` with ``s = amax / qmax`` and ``qmax = 2**(bits-1) - 1``
(127 for an 8-bit kernel), so ``q`` lies in [-127, 127] and -128 is never produced. A zero amax gives
``s = 1`` (all of q is 0). Scales are float32 (float64 for float64 inputs, and for any operand whose
smallest non-zero amax is so small that ``qmax / amax`` would overflow float32).

Schemes (`QuantConfig`):
- ``weights``: ``per_channel`` (default; one scale per output channel = per column of B) or ``per_tensor``.
- ``activations``: ``per_row`` (default; dynamic, one scale per row of A = per token, and per column of a
  B operand that is not a weight) or ``per_tensor`` (one dynamic scale per operand).
``QuantConfig.per_tensor()`` is the older behaviour (one scale per operand everywhere).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict

from .. import hostops
from ..hostops.patches import Patches

WeightScheme = Literal["per_tensor", "per_channel"]
ActivationScheme = Literal["per_tensor", "per_row"]

# Non-zero amax below this is quantized in float64 (qmax / amax must not overflow float32).
_TINY_F32 = 2.0 ** -100
# Below this many elements max|x| is taken with fewer, simpler ops (per-op overhead dominates).
_SMALL = 1 << 18


class QuantConfig(BaseModel):
    """How float operands are quantized. Immutable and hashable (part of the weight-cache key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weights: WeightScheme = "per_channel"
    activations: ActivationScheme = "per_row"

    @classmethod
    def per_tensor(cls) -> QuantConfig:
        """One symmetric scale per operand (weights and activations)."""
        return cls(weights="per_tensor", activations="per_tensor")


_global = QuantConfig()
_scoped: contextvars.ContextVar[QuantConfig | None] = contextvars.ContextVar("pynqtorch_quant", default=None)


def _build(config: QuantConfig | None, changes: dict[str, str]) -> QuantConfig:
    base = config if config is not None else get_quant_config()
    return QuantConfig.model_validate({**base.model_dump(), **changes}) if changes else base


def get_quant_config() -> QuantConfig:
    """The config in effect here: the innermost `quant_config` block, else the global one."""
    scoped = _scoped.get()
    return scoped if scoped is not None else _global


def set_quant_config(config: QuantConfig | None = None, **changes: str) -> QuantConfig:
    """Set the global config (a `QuantConfig`, or field changes such as ``weights="per_tensor"``)."""
    global _global
    new = _build(config, changes)
    _global = new
    return new


@contextlib.contextmanager
def quant_config(config: QuantConfig | None = None, **changes: str) -> Iterator[QuantConfig]:
    """Use `config` (or the current one with `changes`) inside the block, for this thread/context only."""
    new = _build(config, changes)
    token = _scoped.set(new)
    try:
        yield new
    finally:
        _scoped.reset(token)


def resolve_config(override: QuantConfig | None) -> QuantConfig:
    """The config a call uses: the caller's override (e.g. a module's own config), else the current one."""
    return override if override is not None else get_quant_config()


@dataclass
class Quantized:
    """A quantized operand: integer values, their scale (broadcastable to the output) and bad lines.

    For A (``[B, M, K]``) scale is ``[B, M, 1]`` or 0-dim and `bad` marks rows ``[B, M, 1]``; for B
    (``[B, K, N]``) scale is ``[B, 1, N]`` or 0-dim and `bad` marks columns ``[B, 1, N]``. A bad line holds
    NaN or Inf; its values were quantized as 0 and the output entries it touches are recomputed on CPU.
    """

    q: torch.Tensor
    scale: torch.Tensor
    bad: torch.Tensor | None
    qmax: int


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def quantize(x: torch.Tensor | Patches, dim: int, per_line: bool, qmax: int) -> Quantized:
    """Quantize 3-D float `x` symmetrically to int8; lines run along `dim` (K: -1 for A, -2 for B).

    `per_line` gives one scale per line, else one per tensor; ``qmax <= 127``. The native host pass
    (`pynqtorch.hostops`) takes the common float32 case; the torch ops below define the result.
    """
    if isinstance(x, Patches):  # a convolution's A: quantized from its input, else materialized
        native = hostops.im2col_quantize(x, per_line, qmax)
        if native is not None:
            return Quantized(native[0], native[1], None, qmax)
        x = x.materialize()
    cd = compute_dtype(x.dtype)
    xc = x if x.dtype == cd else x.to(cd)
    native = hostops.quantize(xc, dim, per_line, qmax)
    if native is not None:
        return Quantized(native[0], native[1], None, qmax)
    return quantize_torch(xc, dim, per_line, qmax)


def quantize_torch(xc: torch.Tensor, dim: int, per_line: bool, qmax: int) -> Quantized:
    """`quantize` in torch ops for `xc` already in its compute dtype (float32 or float64)."""
    cd = xc.dtype
    amax = _amax(xc, dim)
    lo, hi = _range(amax)
    bad = None
    if not math.isfinite(hi):
        bad = ~torch.isfinite(amax)
        xc = xc.nan_to_num(0.0, 0.0, 0.0)
        amax = _amax(xc, dim)
        lo, hi = _range(amax)
    if not per_line:
        amax = amax.new_full((), hi)
        lo = hi
    if lo >= _TINY_F32:  # common case: every line has a normal, non-zero amax
        scale = amax / qmax
        inv = scale.reciprocal()
    else:
        if cd == torch.float32 and 0 < float(torch.where(amax > 0, amax, math.inf).min()) < _TINY_F32:
            cd = torch.float64
            xc, amax = xc.to(cd).nan_to_num(0.0, 0.0, 0.0), amax.to(cd)
        scale = torch.where(amax > 0, amax / qmax, 1.0)
        inv = scale.reciprocal()
    # |x * inv| <= qmax (1 + 3 eps) rounds to at most qmax: no clamp needed.
    q = torch.mul(xc, inv).round_().to(torch.int8)
    return Quantized(q, scale, bad, qmax)


def _amax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """max |x| along `dim` (kept), NaN where a line holds NaN; zeros when `dim` is empty."""
    if x.shape[dim] == 0:
        shape = list(x.shape)
        shape[dim] = 1
        return x.new_zeros(shape)
    if x.numel() < _SMALL:
        return x.abs().amax(dim=dim, keepdim=True)
    # Two reductions beat materializing |x| on large operands.
    return torch.maximum(x.amax(dim=dim, keepdim=True), x.amin(dim=dim, keepdim=True).neg_())


def _range(amax: torch.Tensor) -> tuple[float, float]:
    if amax.numel() == 0:
        return math.inf, 0.0
    if amax.numel() == 1:  # one line (a single row, a vector): one read instead of a reduction and two
        v = float(amax)
        return v, v
    lo, hi = torch.aminmax(amax)
    return float(lo), float(hi)
