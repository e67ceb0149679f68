"""The kernel description (`description.json`): one validated source for binding, C-sim, registers and perf.

Every kernel folder holds a `description.json`. It says which torch op family the kernel serves, the
arithmetic it implements (operand and accumulator widths, wrap or saturate), the tile it computes, the
C signature of its top function (argument order, roles, pointer types, packing) and the AXI-lite register
offsets the board target programs, plus a cycle model. Errors name the file and the offending field.
"""

from __future__ import annotations

import ast
import operator
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from .ctype import parse_ctype
from .jsonspec import CIdentifier

Role = Literal["a", "b", "c", "m", "n", "k"]
DIM_ROLES = ("m", "n", "k")
DATA_ROLES = ("a", "b", "c")


class DescriptionError(ValueError):
    """A `description.json` that is missing, malformed or inconsistent; the message names file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _hex_offset(v: str) -> str:
    try:
        int(v, 16)
    except ValueError as e:
        raise ValueError(f"offset {v!r} is not a hex number such as '0x10'") from e
    return v


HexOffset = Annotated[str, AfterValidator(_hex_offset)]


class Arith(_Strict):
    """What the hardware computes: operands of `operand_bits` signed bits, a `acc_bits` accumulator."""

    operand_bits: int = Field(8, ge=2, le=16)
    acc_bits: int = Field(32, ge=8, le=64)
    overflow: Literal["wrap", "saturate"] = "wrap"


class Tile(_Strict):
    """Tile granularity. Fixed kernels compute exactly m×k by k×n; runtime dims are multiples up to `max`."""

    m: int = Field(gt=0)
    n: int = Field(gt=0)
    k: int = Field(gt=0)


class Arg(_Strict):
    """One argument of the top function, in C order."""

    name: str
    role: Role
    interface: Literal["m_axi", "s_axilite"]
    ctype: str
    offset: HexOffset = Field(description="AXI-lite register offset (hex string) of this argument")
    # Operand packing: how many int8 operands one word of `ctype` holds (1: low bits of each word).
    pack: int = Field(1, ge=1, le=8)
    # Memory layout of a/b/c: a is MxK row-major; b is KxN row-major ("kn") or NxK ("nk", i.e. B^T).
    layout: Literal["mk", "kn", "nk", "mn", "scalar"] = "scalar"
    bundle: str | None = None

    @property
    def offset_int(self) -> int:
        return int(self.offset, 16)


class Control(_Strict):
    interface: Literal["s_axilite"] = "s_axilite"
    bundle: str = "CTRL"
    ap_ctrl: str = "0x00"

    @property
    def ap_ctrl_int(self) -> int:
        return int(self.ap_ctrl, 16)


class Hls(_Strict):
    part: str = "xc7z020clg400-1"
    clock_ns: float = Field(10.0, gt=0)
    config: str = "hls_config.cfg"


_PERF_NAMES = {"m", "n", "k"}
_PERF_FUNCS = {"ceil": lambda x: -(-x // 1), "max": max, "min": min}
_PERF_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Load, ast.Add, ast.Sub,
               ast.Mult, ast.FloorDiv, ast.Div, ast.Mod, ast.Pow, ast.USub, ast.Call)
_PERF_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
                ast.Div: operator.truediv, ast.Mod: operator.mod, ast.Pow: operator.pow}
# Bounds that keep evaluating a cycle model instant: no value beyond 2**64 cycles, no exponent beyond 64.
_PERF_MAX = 2**64
_PERF_MAX_EXP = 64


def _perf_eval(node: ast.AST, env: dict[str, int]) -> int | float:
    """Evaluate a checked cycle-model node, refusing exponents and values beyond the bounds."""
    if isinstance(node, ast.Expression):
        return _perf_eval(node.body, env)
    if isinstance(node, ast.Constant):
        value = node.value
    elif isinstance(node, ast.Name):
        value = env[node.id]
    elif isinstance(node, ast.UnaryOp):
        value = _perf_eval(node.operand, env)
        value = -value if isinstance(node.op, ast.USub) else value
    elif isinstance(node, ast.Call):
        value = _PERF_FUNCS[node.func.id](*(_perf_eval(a, env) for a in node.args))
    else:
        left, right = _perf_eval(node.left, env), _perf_eval(node.right, env)
        if isinstance(node.op, ast.Pow) and not 0 <= right <= _PERF_MAX_EXP:
            raise ValueError(f"exponent {right} is outside 0..{_PERF_MAX_EXP}")
        value = _PERF_BINOPS[type(node.op)](left, right)
    if abs(value) > _PERF_MAX:
        raise ValueError(f"{value:.3g} exceeds 2**64 cycles")
    return value


def check_expression(v: str, names: set[str], field: str) -> str:
    """Reject a cycle model that is not arithmetic in `names` (and ceil/max/min); returns it unchanged."""
    try:
        tree = ast.parse(v, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"{field}: {v!r} is not an expression ({e.msg})") from None
    for node in ast.walk(tree):
        if not isinstance(node, _PERF_NODES):
            raise ValueError(f"cycle model {v!r}: {type(node).__name__} is not allowed")  # noqa: TRY004
        if isinstance(node, ast.Name) and node.id not in names | set(_PERF_FUNCS):
            raise ValueError(f"cycle model {v!r}: unknown name {node.id!r} (use {', '.join(sorted(names))})")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _PERF_FUNCS):
            raise ValueError(f"cycle model {v!r}: only {sorted(_PERF_FUNCS)} may be called")
    return v


def eval_expression(v: str, values: dict[str, int]) -> int:
    """Value of a checked cycle model for the given sizes, evaluated with bounds (`ValueError` beyond them)."""
    try:
        return int(_perf_eval(ast.parse(v, mode="eval"), values))
    except (ValueError, ArithmeticError, TypeError) as e:
        sizes = ", ".join(f"{k}={x}" for k, x in values.items())
        raise ValueError(f"cycle model {v!r} at {sizes}: {e}") from None


class Perf(_Strict):
    """Cycle model: an arithmetic expression in m, n, k (one kernel call), e.g. ``k*n + m*(k + n)``."""

    cycles: str
    ii: int = Field(1, ge=1)

    @field_validator("cycles")
    @classmethod
    def _safe(cls, v: str) -> str:
        return check_expression(v, _PERF_NAMES, "cycles")

    def predict(self, m: int, n: int, k: int) -> int:
        """Predicted cycles for one kernel call on an m×k by k×n problem (`ValueError` if the model fails)."""
        value = eval_expression(self.cycles, {"m": m, "n": n, "k": k})
        if value < 0:
            raise ValueError(f"cycle model {self.cycles!r} at m={m}, n={n}, k={k} is negative ({value})")
        return value


class Description(_Strict):
    """A validated `description.json`."""

    name: CIdentifier
    top: CIdentifier
    op: Literal["gemm"]
    sources: list[str] = Field(min_length=1)
    testbench: str | None = None
    dtypes: dict[str, str]
    arith: Arith = Arith()
    tile: Tile
    # Dims the kernel takes at run time (as s_axilite scalars): multiples of `tile`, at most `max`.
    runtime_dims: list[Literal["m", "n", "k"]] = []
    max: Tile | None = None
    # Engines prefer kernels with higher priority when several are available.
    priority: int = 0
    args: list[Arg]
    control: Control = Control()
    hls: Hls = Hls()
    perf: Perf

    @model_validator(mode="after")
    def _consistent(self) -> Description:
        roles = [a.role for a in self.args]
        for r in DATA_ROLES:
            if roles.count(r) != 1:
                raise ValueError(f"args: need exactly one argument with role {r!r}, found {roles.count(r)}")
        for r in DIM_ROLES:
            want = 1 if r in self.runtime_dims else 0
            if roles.count(r) != want:
                raise ValueError(
                    f"args: role {r!r} appears {roles.count(r)} times but runtime_dims is {self.runtime_dims}"
                )
        if self.runtime_dims and self.max is None:
            raise ValueError("max: required when runtime_dims is not empty")
        names = [a.name for a in self.args]
        if len(set(names)) != len(names):
            raise ValueError(f"args: duplicate argument names in {names}")
        offsets = [a.offset_int for a in self.args]
        if len(set(offsets)) != len(offsets):
            raise ValueError(f"args: duplicate register offsets in {[a.offset for a in self.args]}")
        self._check_limits()
        self._check_widths()
        for dims in ({d: getattr(self.tile, d) for d in DIM_ROLES}, {d: self.dim_limit(d) for d in DIM_ROLES}):
            try:
                self.perf.predict(**dims)
            except ValueError as e:
                raise ValueError(f"perf.cycles: {e}") from None
        return self

    def _check_limits(self) -> None:
        if self.max is None:
            return
        for d in DIM_ROLES:
            top, tile = getattr(self.max, d), getattr(self.tile, d)
            if top < tile or top % tile:
                raise ValueError(f"max.{d}: {top} must be a multiple of tile.{d} = {tile} (and at least it)")

    def _check_widths(self) -> None:
        """Operands travel in 8-bit lanes (`pack` per word) and results come back one per word of c."""
        bits = {}
        for i, a in enumerate(self.args):
            try:
                bits[a.role] = parse_ctype(a.ctype).dtype.itemsize * 8
            except ValueError as e:
                raise ValueError(f"args[{i}].ctype: {e}") from None
        for i, a in enumerate(self.args):
            if a.role in ("a", "b"):
                if a.pack > 1 and self.arith.operand_bits != 8:
                    raise ValueError(f"args[{i}].pack: packed operands travel in 8-bit lanes, but "
                                     f"arith.operand_bits is {self.arith.operand_bits}")
                if a.pack * self.arith.operand_bits > bits[a.role]:
                    raise ValueError(f"args[{i}].ctype: a {bits[a.role]}-bit word of {a.ctype!r} cannot hold "
                                     f"{a.pack} operand(s) of {self.arith.operand_bits} bits")
            elif a.role == "c" and (a.pack != 1 or self.arith.acc_bits > bits["c"]):
                raise ValueError(f"args[{i}]: results come back one per word, but {a.ctype!r} "
                                 f"(pack {a.pack}) cannot hold an arith.acc_bits = {self.arith.acc_bits} accumulator")

    def arg(self, role: str) -> Arg:
        return next(a for a in self.args if a.role == role)

    def dim_limit(self, dim: str) -> int:
        """Largest value of `dim` one call takes (the tile for fixed dims)."""
        if dim in self.runtime_dims:
            assert self.max is not None
            return getattr(self.max, dim)
        return getattr(self.tile, dim)
