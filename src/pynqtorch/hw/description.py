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

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

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
_PERF_MAX_POW = 4
# A term larger than this at the largest call (about 3 hours at 100 MHz) is treated as unbounded.
PERF_BOUND = 1 << 40
_PERF_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
                ast.Div: operator.truediv, ast.Mod: operator.mod, ast.Pow: operator.pow}
# Evaluation stops at once beyond 2**64 (check_expression already limits powers to small constant exponents).
_PERF_MAX = 2**64


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
        if isinstance(node, ast.Constant) and (isinstance(node.value, bool)
                                               or not isinstance(node.value, int | float)):
            raise ValueError(f"cycle model {v!r}: constant {node.value!r} is not a number")  # noqa: TRY004
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and not (
                isinstance(node.right, ast.Constant) and isinstance(node.right.value, int)
                and 0 <= node.right.value <= _PERF_MAX_POW):
            raise ValueError(f"cycle model {v!r}: powers need a constant exponent from 0 to {_PERF_MAX_POW}")
    return v


def eval_expression(v: str, values: dict[str, int]) -> int:
    """Value of a checked cycle model for the given sizes, evaluated with bounds (`ValueError` beyond them)."""
    try:
        return int(_perf_eval(ast.parse(v, mode="eval"), values))
    except (ValueError, ArithmeticError, TypeError) as e:
        sizes = ", ".join(f"{k}={x}" for k, x in values.items())
        raise ValueError(f"cycle model {v!r} at {sizes}: {e}") from None


class Perf(_Strict):
    """Cycle model of one kernel call: named `terms` (expressions in m, n, k and the `params`), summed.

    ``params`` name the AXI and pipeline constants the terms use (read latency, write response, pipeline
    depth, ...); a single ``cycles`` expression is the older form, read as one term named ``cycles``.
    """

    cycles: str | None = None
    terms: dict[str, str] = {}
    params: dict[str, int] = {}
    ii: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _safe(self) -> Perf:
        if (self.cycles is None) == (not self.terms):
            raise ValueError("give either 'terms' (named cycle terms) or 'cycles' (one expression), not both")
        for name, value in self.params.items():
            if not name.isidentifier() or name in _PERF_NAMES | set(_PERF_FUNCS):
                raise ValueError(f"params.{name}: not a usable name (identifiers other than m, n, k, ceil, max, min)")
            if not 0 <= value <= 1 << 20:
                raise ValueError(f"params.{name}: {value} is outside 0 .. {1 << 20} cycles")
        names = _PERF_NAMES | set(self.params)
        for name, expr in self.expressions().items():
            if not name.isidentifier():
                raise ValueError(f"terms.{name}: a term name must be an identifier")
            field = f"terms.{name}" if self.terms else "cycles"
            try:
                check_expression(expr, names, field)
            except ValueError as e:
                raise ValueError(str(e) if str(e).startswith(field) else f"{field}: {e}") from None
        return self

    def expressions(self) -> dict[str, str]:
        """Term name -> expression (``{"cycles": ...}`` for the single-expression form)."""
        return dict(self.terms) if self.terms else {"cycles": self.cycles or "0"}

    def breakdown(self, m: int, n: int, k: int) -> dict[str, int]:
        """Cycles of each term for one call on an m×k by k×n problem."""
        values = {"m": m, "n": n, "k": k, **self.params}
        return {name: eval_expression(expr, values) for name, expr in self.expressions().items()}

    def predict(self, m: int, n: int, k: int) -> int:
        """Predicted cycles for one kernel call on an m×k by k×n problem."""
        return sum(self.breakdown(m, n, k).values())


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
        self._bounded_perf()
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

    def _bounded_perf(self) -> None:
        """Every perf term is a finite, non-negative cycle count from the smallest to the largest call."""
        prefix = "perf.terms." if self.perf.terms else "perf."
        for dims in ((self.tile.m, self.tile.n, self.tile.k), tuple(self.dim_limit(d) for d in DIM_ROLES)):
            env = {**dict(zip(DIM_ROLES, dims)), **self.perf.params}
            for name, expr in self.perf.expressions().items():
                try:
                    v = eval_expression(expr, env)
                except ValueError as e:
                    raise ValueError(f"{prefix}{name}: {e}") from None
                if not 0 <= v <= PERF_BOUND:
                    raise ValueError(f"{prefix}{name}: {v} cycles at m, n, k = {dims} is negative or unbounded "
                                     f"(limit {PERF_BOUND})")

    def arg(self, role: str) -> Arg:
        return next(a for a in self.args if a.role == role)

    def dim_limit(self, dim: str) -> int:
        """Largest value of `dim` one call takes (the tile for fixed dims)."""
        if dim in self.runtime_dims:
            assert self.max is not None
            return getattr(self.max, dim)
        return getattr(self.tile, dim)
