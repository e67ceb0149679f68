"""Kernel descriptions of the `map` (element-wise) and `rows` (last-dim reduction/normalization) op families,
and `load_description` for a `description.json` of any family (`gemm` is modelled in `hw.description`).

A `map` kernel computes one element-wise aten op (one or two inputs) on a block of up to ``limits.block``
elements per call; a `rows` kernel computes an op over the last dim on up to ``limits.max_rows`` rows of at
most ``limits.max_cols`` elements per call. Both name the aten op(s) they implement (checked to exist),
the I/O number format of their buffers, their C signature (m_axi buffers and s_axilite scalars by role,
with AXI-lite offsets), a cycle model in the call's sizes and the verification tolerance and inputs.
There is no golden integer arithmetic for these kernels: torch's own float op is the reference.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator

from .description import (
    Control,
    Description,
    DescriptionError,
    HexOffset,
    Hls,
    _Strict,
    check_expression,
    eval_expression,
)
from .jsonspec import CIdentifier, load_tagged_spec
from .packing import parse_ctype

MAP_ROLES = ("x", "y", "out", "n")
ROWS_ROLES = ("x", "out", "rows", "cols", "eps", "weight", "bias", "mean", "rstd")
# Roles the kernel writes; every other buffer role is read.
OUTPUT_ROLES = ("out", "mean", "rstd")
# Rows ops pynqtorch binds, with the roles each needs (besides x, out, rows, cols) and may use.
ROWS_OPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "aten::_softmax": ((), ()),
    "aten::_log_softmax": ((), ()),
    "aten::native_layer_norm": (("eps", "mean", "rstd"), ("weight", "bias")),
}
_FIXED = re.compile(r"ap_fixed<\s*(\d+)\s*,\s*(-?\d+)\s*>")


def aten_op(name: str) -> torch._ops.OpOverload:
    """The aten overload named ``aten::op`` or ``aten::op.overload``; ValueError naming it when there is none."""
    ns, sep, rest = name.partition("::")
    if ns != "aten" or not sep or not rest:
        raise ValueError(f"{name!r} is not an aten op name such as 'aten::gelu' or 'aten::add.Tensor'")
    base, _, overload = rest.partition(".")
    packet = getattr(torch.ops.aten, base, None) if base.isidentifier() else None
    if packet is None:
        raise ValueError(f"aten op {name!r} does not exist in torch {torch.__version__}")
    overload = overload or "default"
    if overload not in packet.overloads():
        raise ValueError(f"aten op {name!r}: overload {overload!r} does not exist (overloads of aten::{base}: "
                         f"{packet.overloads()})")
    return getattr(packet, overload)


class IoFormat(_Strict):
    """Number format of the kernel's data buffers: ``float32`` words, ``ap_fixed<W,I>`` raw integers (W <= 32,
    round to nearest on the host, values outside the range go to CPU), or ``int8`` with a fixed `scale`."""

    format: str = "float32"
    scale: float | None = Field(None, gt=0)

    @field_validator("format")
    @classmethod
    def _known(cls, v: str) -> str:
        m = _FIXED.fullmatch(v)
        if v in ("float32", "int8") or (m and 1 <= int(m.group(1)) <= 32 and int(m.group(2)) <= int(m.group(1))):
            return v
        raise ValueError(f"format {v!r} is not float32, int8 or ap_fixed<W,I> with 1 <= W <= 32 and I <= W")

    @model_validator(mode="after")
    def _scaled(self) -> IoFormat:
        if (self.format == "int8") != (self.scale is not None):
            raise ValueError("scale: required for int8 and only for int8")
        return self

    @property
    def step(self) -> float | None:
        """Value of one raw integer unit (None for float32)."""
        m = _FIXED.fullmatch(self.format)
        return 2.0 ** -(int(m.group(1)) - int(m.group(2))) if m else self.scale

    @property
    def bits(self) -> int:
        m = _FIXED.fullmatch(self.format)
        return int(m.group(1)) if m else 8 if self.format == "int8" else 32


class BlockArg(_Strict):
    """One argument of the top function, in C order: a buffer (m_axi) or a scalar (s_axilite) by role."""

    name: CIdentifier
    role: str
    interface: Literal["m_axi", "s_axilite"]
    ctype: str
    offset: HexOffset = Field(description="AXI-lite register offset (hex string) of this argument")
    bundle: str | None = None

    @property
    def offset_int(self) -> int:
        return int(self.offset, 16)

    @property
    def pointer(self) -> bool:
        return self.interface == "m_axi"


class Tolerance(_Strict):
    """An element passes when ``|got - want| <= abs + rel * |want|`` (NaN must meet NaN)."""

    abs: float = Field(ge=0)
    rel: float = Field(0.0, ge=0)


class Verify(_Strict):
    """What `pynqtorch verify` feeds the kernel: uniform random inputs in `range`, the `extremes` (large
    magnitudes, zeros) and, when `nonfinite` is ``propagate``, NaN and ±Inf, after which outputs must be
    non-finite exactly where torch's are (NaN and ±Inf alike); ``cpu`` declares that the kernel does not
    handle them (inputs holding them run on CPU)."""

    tolerance: Tolerance
    range: tuple[float, float] = (-8.0, 8.0)
    extremes: tuple[float, ...] = (0.0, -0.0, 1e4, -1e4)
    nonfinite: Literal["propagate", "cpu"] = "propagate"

    @model_validator(mode="after")
    def _ordered(self) -> Verify:
        lo, hi = self.range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"range: {list(self.range)} must be two finite numbers, low < high")
        if not all(math.isfinite(x) for x in self.extremes):
            raise ValueError("extremes: must be finite (NaN/Inf are covered by 'nonfinite')")
        return self


class Perf(_Strict):
    """Cycle model of one call: an expression in the call's sizes (`n` for map, `rows`, `cols` for rows)."""

    cycles: str
    ii: int = Field(1, ge=1)


class _BlockKernel(_Strict):
    name: CIdentifier
    top: CIdentifier
    sources: list[str] = Field(min_length=1)
    testbench: str | None = None
    aten: list[str] = Field(min_length=1, description="aten ops implemented, e.g. 'aten::gelu'")
    # Non-tensor arguments of the aten op the kernel computes for (others must be at their schema default).
    match: dict[str, str | int | float | bool] = Field(default_factory=dict)
    io: IoFormat = IoFormat()
    priority: int = 0
    args: list[BlockArg]
    control: Control = Control()
    hls: Hls = Hls()
    perf: Perf
    verify: Verify

    _roles: ClassVar[tuple[str, ...]] = ()
    _sizes: ClassVar[tuple[str, ...]] = ()

    @field_validator("aten")
    @classmethod
    def _exist(cls, v: list[str]) -> list[str]:
        for op in v:
            aten_op(op)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> _BlockKernel:
        roles = [a.role for a in self.args]
        for i, a in enumerate(self.args):
            if a.role not in self._roles:
                raise ValueError(f"args[{i}].role: {a.role!r} is not one of {list(self._roles)} ({self.op} kernels)")
            want = "s_axilite" if a.role in ("n", "rows", "cols", "eps") else "m_axi"
            if a.interface != want:
                raise ValueError(f"args[{i}].interface: role {a.role!r} is passed by {want}")
            if roles.count(a.role) > 1:
                raise ValueError(f"args: role {a.role!r} appears {roles.count(a.role)} times")
        for r in ("x", "out", *self._sizes):
            if r not in roles:
                raise ValueError(f"args: an argument with role {r!r} is required")
        for field in ("names", "offsets"):
            vals = [a.name if field == "names" else a.offset_int for a in self.args]
            if len(set(vals)) != len(vals):
                raise ValueError(f"args: duplicate argument {field}")
        for i, a in enumerate(self.args):
            self._check_ctype(i, a)
        check_expression(self.perf.cycles, set(self._sizes), "perf.cycles")
        return self

    def _check_ctype(self, i: int, a: BlockArg) -> None:
        try:
            ct = parse_ctype(a.ctype)
        except ValueError as e:
            raise ValueError(f"args[{i}].ctype: {e}") from None
        if ct.pointer != a.pointer:
            raise ValueError(f"args[{i}].ctype: {a.ctype!r} for an {a.interface} argument")
        if a.role == "eps":
            want_float = True
        elif not a.pointer:
            want_float = False
        else:
            want_float = self.io.format == "float32"
            if not want_float and ct.dtype.itemsize * 8 < self.io.bits:
                raise ValueError(f"args[{i}].ctype: {a.ctype!r} words cannot hold {self.io.format} values")
        if (ct.dtype.kind == "f") != want_float or (want_float and ct.dtype.itemsize != 4):
            what = "float" if want_float else "an integer type"
            raise ValueError(f"args[{i}].ctype: {a.ctype!r} but role {a.role!r} with io {self.io.format} "
                             f"needs {what}")

    @property
    def roles(self) -> dict[str, BlockArg]:
        return {a.role: a for a in self.args}

    def predict(self, **sizes: int) -> int:
        """Predicted cycles of one call of the given sizes."""
        return eval_expression(self.perf.cycles, sizes)


class MapLimits(_Strict):
    block: int = Field(gt=0, description="most elements one call takes")


class RowsLimits(_Strict):
    max_cols: int = Field(gt=0, description="longest row the kernel's row buffer holds")
    max_rows: int = Field(gt=0, description="most rows one call takes")


class MapDescription(_BlockKernel):
    """An element-wise kernel: ``out[i] = op(x[i])`` or ``op(x[i], y[i])`` for ``i < n``."""

    op: Literal["map"]
    limits: MapLimits
    _roles = MAP_ROLES
    _sizes = ("n",)

    @model_validator(mode="after")
    def _arity(self) -> MapDescription:
        inputs = 2 if "y" in self.roles else 1
        for i, name in enumerate(self.aten):
            schema = aten_op(name)._schema
            tensors = [a for a in schema.arguments if isinstance(a.type, torch._C.TensorType)]
            others = [a for a in schema.arguments if a not in tensors and not a.has_default_value()]
            if len(tensors) != inputs or others or len(schema.returns) != 1:
                raise ValueError(f"aten[{i}]: {schema} is not an element-wise op of {inputs} tensor input(s) "
                                 "whose other arguments have defaults, returning one tensor")
            names = {a.name for a in schema.arguments} - {a.name for a in tensors}
            unknown = sorted(set(self.match) - names)
            if unknown:
                raise ValueError(f"match: {unknown} are not arguments of {name}")
        return self


class RowsDescription(_BlockKernel):
    """A kernel over the last dim: ``rows`` rows of ``cols`` elements per call (e.g. softmax, layer norm)."""

    op: Literal["rows"]
    limits: RowsLimits
    _roles = ROWS_ROLES
    _sizes = ("rows", "cols")

    @model_validator(mode="after")
    def _bindable(self) -> RowsDescription:
        roles = set(self.roles)
        for i, name in enumerate(self.aten):
            if name not in ROWS_OPS:
                raise ValueError(f"aten[{i}]: {name} exists but pynqtorch binds only {sorted(ROWS_OPS)} to "
                                 "rows kernels")
            needs, may = ROWS_OPS[name]
            missing = sorted(set(needs) - roles)
            extra = sorted(roles - set(needs) - set(may) - {"x", "out", "rows", "cols"})
            if missing or extra:
                raise ValueError(f"aten[{i}]: {name} needs roles {sorted(needs)} and may use {sorted(may)}; "
                                 f"args lack {missing} and have unusable {extra}")
        if self.match:
            raise ValueError("match: rows kernels take their parameters as arguments (e.g. role 'eps')")
        return self


BlockDescription = MapDescription | RowsDescription
AnyDescription = Description | MapDescription | RowsDescription


def load_description(path: str | Path) -> AnyDescription:
    """Read and validate a `description.json` of any op family (`gemm`, `map`, `rows`, discriminated on
    ``op``), raising `DescriptionError` naming file and field."""
    models = {"gemm": Description, "map": MapDescription, "rows": RowsDescription}
    return load_tagged_spec(Path(path), "op", models, DescriptionError)  # type: ignore[return-value]
