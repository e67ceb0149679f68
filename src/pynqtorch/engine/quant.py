"""Quantization of float operands to symmetric integers: schemes, their registry, the active config.

Symmetric, no zero point: ``q = round(x / s)`` with ``s = amax / qmax`` and ``qmax = 2**(bits-1) - 1``
(127 for an 8-bit kernel), so ``q`` lies in [-127, 127] and -128 is never produced. A zero amax gives
``s = 1`` (all of q is 0). Scales are float32 (float64 for float64 inputs, and for any operand whose
smallest non-zero amax is so small that ``qmax / amax`` would overflow float32).

A `Scheme` says which elements share a scale: it quantizes an operand to int8 values and scales of a
declared shape (`Scheme.scale_shape`) and dequantizes the kernel's exact integer result. Schemes are
registered by name (`register_scheme`); `QuantConfig` names one for weights and one for activations.
Registered here:

- ``per_tensor``: one scale per operand (weights or activations).
- ``per_channel`` (weights, default): one scale per output channel (column of B).
- ``per_row`` (activations, default): one dynamic scale per row of A (token), and per column of a B
  operand that is not a weight.
- ``per_group_32`` / ``_64`` / ``_128`` (weights): one scale per (output channel, group of 32/64/128
  along K); the engine runs each group as its own kernel GEMM and applies the scales to the int32 partial
  sums on the host.

A scheme may have a native fast path (`Scheme.native`, `Scheme.native_patches`, the C++ passes of
`pynqtorch.hostops`); whatever it declines runs the torch formulation, which defines the result.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from .. import hostops
from ..hostops.patches import Patches

_F32_MAX = torch.finfo(torch.float32).max
# Non-zero amax below this is quantized in float64 (qmax / amax must not overflow float32).
_TINY_F32 = 2.0 ** -100
# Below this many elements max|x| is taken with fewer, simpler ops (per-op overhead dominates).
_SMALL = 1 << 18
ROLES = ("weights", "activations")


@dataclass
class Quantized:
    """A quantized operand: integer values, their scale and bad lines.

    For A (``[B, M, K]``) scale is ``[B, M, 1]`` or 0-dim and `bad` marks rows ``[B, M, 1]``. For B
    (``[B, K, N]``) scale is ``[B, 1, N]`` or 0-dim and `bad` marks columns ``[B, 1, N]``; a grouped scheme
    (`Scheme.group` g) gives B as ``[B*G, g, N]`` (K zero-padded to ``G = ceil(K / g)`` groups, batch-major)
    with scale ``[B, G, 1, N]``. A bad line holds NaN or Inf; its values were quantized as 0 and the output
    entries it touches are recomputed on CPU.
    """

    q: torch.Tensor
    scale: torch.Tensor
    bad: torch.Tensor | None
    qmax: int


@dataclass(frozen=True)
class Scheme:
    """How one operand is quantized and how the integer product is dequantized. Subclass and register.

    `roles` says which `QuantConfig` fields may name it ("weights", "activations"). `group` is the length
    of the K groups that get their own scales (None: a scale spans all of K); only weight schemes group.
    Operands are 3-D: A ``[B, M, K]`` with K along ``dim=-1``, B ``[B, K, N]`` with K along ``dim=-2``.
    """

    name: str
    roles: tuple[str, ...] = ROLES
    group: ClassVar[int | None] = None

    def scale_shape(self, shape: tuple[int, int, int], dim: int) -> tuple[int, ...]:
        """Shape of the scales `quantize` gives for an operand of `shape` with K along `dim`."""
        raise NotImplementedError

    def quantize_torch(self, xc: torch.Tensor, dim: int, qmax: int) -> Quantized:
        """The definition: `xc` in its compute dtype (float32 or float64) to int8 values and scales."""
        raise NotImplementedError

    def native(self, xc: torch.Tensor, dim: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Optional fast path giving `quantize_torch`'s values and scales bit for bit, or None (declined)."""
        return None

    def native_patches(self, p: Patches, qmax: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Optional fast path for a convolution's A (`Patches`) without building the matrix, or None."""
        return None

    def quantize(self, x: torch.Tensor | Patches, dim: int, qmax: int) -> Quantized:
        """Quantize 3-D float `x` (a fast path if one takes it, else `quantize_torch`); ``qmax <= 127``.
        Raises ValueError when the result does not have the declared shapes (never broadcast wrongly)."""
        qz = self._quantize(x, dim, qmax)
        shape = tuple(x.shape)
        want = self.scale_shape(shape, dim)
        if (tuple(qz.scale.shape) != want or qz.q.dtype != torch.int8
                or (self.group is None and tuple(qz.q.shape) != shape)):
            raise ValueError(f"quantization scheme {self.name!r} gave {qz.q.dtype} values {list(qz.q.shape)} and "
                             f"scales {list(qz.scale.shape)} for an operand {list(shape)} (dim={dim}); declared: "
                             f"int8 values {list(shape)}, scales {list(want)}")
        return qz

    def _quantize(self, x: torch.Tensor | Patches, dim: int, qmax: int) -> Quantized:
        if isinstance(x, Patches):  # a convolution's A: quantized from its input, else materialized
            native = self.native_patches(x, qmax)
            if native is not None:
                return Quantized(native[0], native[1], None, qmax)
            x = x.materialize()
        cd = compute_dtype(x.dtype)
        xc = x if x.dtype == cd else x.to(cd)
        native = self.native(xc, dim, qmax)
        if native is not None:
            return Quantized(native[0], native[1], None, qmax)
        return self.quantize_torch(xc, dim, qmax)

    def dequantize(self, acc: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor) -> torch.Tensor:
        """The float result from the exact integer product `acc` (``[B, M, N]``) of A with this scheme's
        B, A's scale `sa` and B's scale `sb`: ``(acc * sa) * sb`` in the scales' dtype.

        With float32 scales ``acc * sa`` can overflow where the result is finite (operands near 1e30 and
        beyond): when the accumulator's range allows that, the same arithmetic runs in float64, rounded once.
        The native pass checks that guard itself (declining the case) while it reads the scales.
        """
        c = hostops.dequantize(acc, sa, sb)
        if c is not None:
            return c
        if (sa.dtype == sb.dtype == torch.float32 and acc.numel()
                and torch.iinfo(acc.dtype).max * float(sa.max()) * max(1.0, float(sb.max())) >= _F32_MAX):
            return acc.to(torch.float64).mul_(sa.to(torch.float64)).mul_(sb.to(torch.float64)).to(torch.float32)
        # The same arithmetic in torch ops (a separate conversion: int * float is not vectorized).
        return acc.to(torch.promote_types(sa.dtype, sb.dtype)).mul_(sa).mul_(sb)


@dataclass(frozen=True)
class _Symmetric(Scheme):
    """The built-in absmax schemes: `quantize_torch` below, the C++ passes of `hostops` as fast paths."""

    per_line: ClassVar[bool]

    def quantize_torch(self, xc: torch.Tensor, dim: int, qmax: int) -> Quantized:
        return quantize_torch(xc, dim, self.per_line, qmax)

    def native(self, xc: torch.Tensor, dim: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return hostops.quantize(xc, dim, self.per_line, qmax)

    def native_patches(self, p: Patches, qmax: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return hostops.im2col_quantize(p, self.per_line, qmax)


@dataclass(frozen=True)
class PerTensor(_Symmetric):
    """One scale for the whole operand."""

    per_line: ClassVar[bool] = False

    def scale_shape(self, shape: tuple[int, int, int], dim: int) -> tuple[int, ...]:
        return ()


@dataclass(frozen=True)
class PerLine(_Symmetric):
    """One scale per line along K: per row of A, per column of B."""

    per_line: ClassVar[bool] = True

    def scale_shape(self, shape: tuple[int, int, int], dim: int) -> tuple[int, ...]:
        return (shape[0], shape[1], 1) if dim == -1 else (shape[0], 1, shape[2])


@dataclass(frozen=True)
class PerGroup(PerLine):
    """One scale per (column of B, group of `size` along K): a weight scheme.

    B ``[B, K, N]`` is zero-padded along K to whole groups and laid out as ``[B*G, size, N]``, each group
    quantized per column (scales ``[B, G, 1, N]``); the engine multiplies A's matching K slices by each group as separate
    kernel GEMMs and `dequantize` sums the int32 partial products scaled per group (in group order).
    """

    size: int = 32
    roles: tuple[str, ...] = ("weights",)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"scheme {self.name!r}: group size must be positive, got {self.size}")

    @property
    def group(self) -> int:  # type: ignore[override]
        return self.size

    def scale_shape(self, shape: tuple[int, int, int], dim: int) -> tuple[int, ...]:
        if dim != -2:
            raise ValueError(f"scheme {self.name!r} groups K of a B operand (dim=-2), got dim={dim}")
        return (shape[0], groups(shape[1], self.size), 1, shape[2])

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        """`x` ``[B, K, N]`` as ``[B*G, size, N]``, K zero-padded to whole groups (A: use `split_k`)."""
        bt, k, n = x.shape
        g = groups(k, self.size)
        if g * self.size != k:
            x = torch.nn.functional.pad(x, (0, 0, 0, g * self.size - k))
        return x.reshape(bt * g, self.size, n)

    def _quantize(self, x: torch.Tensor | Patches, dim: int, qmax: int) -> Quantized:
        shape = self.scale_shape(tuple(x.shape), dim)
        qz = super()._quantize(self.grouped(x), dim, qmax)
        qz.scale = qz.scale.reshape(shape)
        if qz.bad is not None:  # a column is bad if any of its groups is
            qz.bad = qz.bad.reshape(shape).any(1)
        return qz

    def dequantize(self, acc: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor) -> torch.Tensor:
        """``sum_g (acc_g * sb_g)`` over the group products `acc` ``[B*G, M, N]`` in group order, times `sa`;
        `sb` is ``[B, G, 1, N]``."""
        bt, g = sb.shape[:2]
        cd = torch.promote_types(sa.dtype, sb.dtype)
        # As `Scheme.dequantize`: when float32 could overflow before the result (huge weights, tiny activations),
        # the same sums run in float64, rounded once.
        wide = (cd == torch.float32 and acc.numel() > 0
                and torch.iinfo(acc.dtype).max * g * float(sb.max()) * max(1.0, float(sa.max())) >= _F32_MAX)
        if wide:
            cd, sa, sb = torch.float64, sa.to(torch.float64), sb.to(torch.float64)
        acc = acc.reshape(bt, g, *acc.shape[1:])
        c = acc[:, 0].to(cd).mul_(sb[:, 0])
        for i in range(1, g):
            c.add_(acc[:, i].to(cd).mul_(sb[:, i]))
        c.mul_(sa)
        return c.to(torch.float32) if wide else c


def groups(k: int, size: int) -> int:
    """Number of K groups of `size` covering `k` (at least one)."""
    return max(-(-k // size), 1)


def split_k(a: torch.Tensor, size: int) -> torch.Tensor:
    """A ``[B, M, K]`` as ``[B*G, M, size]`` matching `PerGroup.grouped` of B (K zero-padded)."""
    bt, m, k = a.shape
    g = groups(k, size)
    if g * size != k:
        a = torch.nn.functional.pad(a, (0, g * size - k))
    return a.reshape(bt, m, g, size).transpose(1, 2).reshape(bt * g, m, size)


_schemes: dict[str, Scheme] = {}
_schemes_lock = threading.Lock()


def register_scheme(scheme: Scheme, *, replace: bool = False) -> Scheme:
    """Make `scheme` available under `scheme.name` to `QuantConfig` (an existing name needs `replace`)."""
    if not scheme.name or not isinstance(scheme.name, str):
        raise ValueError(f"a scheme needs a non-empty name, got {scheme.name!r}")
    bad = [r for r in scheme.roles if r not in ROLES]
    if bad or not scheme.roles:
        raise ValueError(f"scheme {scheme.name!r}: roles must be some of {ROLES}, got {scheme.roles}")
    if scheme.group is not None and "activations" in scheme.roles:
        raise ValueError(f"scheme {scheme.name!r}: only weight schemes may group K")
    with _schemes_lock:
        if scheme.name in _schemes and not replace and _schemes[scheme.name] != scheme:
            raise ValueError(f"a scheme named {scheme.name!r} is registered already (pass replace=True)")
        _schemes[scheme.name] = scheme
    return scheme


def get_scheme(name: str) -> Scheme:
    """The registered scheme `name` (KeyError listing the registered names)."""
    try:
        return _schemes[name]
    except KeyError:
        raise KeyError(f"no quantization scheme {name!r}; registered: {', '.join(_schemes)}") from None


def schemes(role: str | None = None) -> dict[str, Scheme]:
    """The registered schemes by name (those for `role` if given), in registration order."""
    return {n: s for n, s in _schemes.items() if role is None or role in s.roles}


register_scheme(PerTensor("per_tensor"))
register_scheme(PerLine("per_channel", ("weights",)))
register_scheme(PerLine("per_row", ("activations",)))
for _size in (32, 64, 128):
    register_scheme(PerGroup(f"per_group_{_size}", size=_size))


class QuantConfig(BaseModel):
    """How float operands are quantized: a registered scheme name for weights and one for activations
    (`schemes`; add your own with `register_scheme`). Immutable and hashable (part of the weight-cache key).

    ``weights`` applies to B operands marked as weights (``gemm(..., weight=True)``, module parameters);
    ``activations`` to A and to a B that is not a weight (e.g. the second operand of bmm in attention).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    weights: str = "per_channel"
    activations: str = "per_row"

    @field_validator("weights", "activations")
    @classmethod
    def _registered(cls, name: str, info: ValidationInfo) -> str:
        scheme = _schemes.get(name)
        if scheme is None:
            raise ValueError(f"no quantization scheme {name!r}; registered for {info.field_name}: "
                             f"{', '.join(schemes(info.field_name))}")
        if info.field_name not in scheme.roles:
            raise ValueError(f"scheme {name!r} quantizes {' and '.join(scheme.roles)}, not {info.field_name}")
        return name

    @classmethod
    def per_tensor(cls) -> QuantConfig:
        """One symmetric scale per operand (weights and activations)."""
        return cls(weights="per_tensor", activations="per_tensor")

    @property
    def weight_scheme(self) -> Scheme:
        return get_scheme(self.weights)

    @property
    def activation_scheme(self) -> Scheme:
        return get_scheme(self.activations)


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


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def quantize_torch(xc: torch.Tensor, dim: int, per_line: bool, qmax: int) -> Quantized:
    """The torch formulation of the line schemes for `xc` already in its compute dtype (float32 or
    float64): one scale per line along `dim` (K: -1 for A, -2 for B) if `per_line`, else one in all."""
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
