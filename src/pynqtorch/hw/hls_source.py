"""What a kernel's HLS C++ declares, as the resource estimate needs it: arrays, multipliers, pragmas, loops.

A small reader for the HLS coding style of the kernels (one statement per line, braces on the `for`
line, pragmas inside the loop or function they apply to), not a C++ parser. It collects

* integer constants (`#define NAME expr`, `const int NAME = expr;`) and types (`typedef ap_int<W> name;`),
* per function: loops (trip count, `UNROLL`, `PIPELINE`; loops inside a pipelined loop are unrolled,
  as Vitis HLS does), local arrays with `ARRAY_PARTITION` / `BIND_STORAGE`, products ``x = a * b``
  with their operand widths and `BIND_OP`, calls to other functions of the file, `INTERFACE` pragmas,
* how many copies of each product the hardware holds: the product of the unroll factors of the loops
  around it, times the copies of the function it sits in (summed over call sites).

Anything it cannot resolve (a bound that is not a constant, an operand of unknown type) is reported in
`notes` rather than guessed silently.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

_C_TYPES = {"bool": 1, "char": 8, "signed char": 8, "unsigned char": 8, "int8_t": 8, "uint8_t": 8, "short": 16,
            "int16_t": 16, "uint16_t": 16, "int": 32, "unsigned": 32, "unsigned int": 32, "int32_t": 32,
            "uint32_t": 32, "long long": 64, "int64_t": 64, "uint64_t": 64, "float": 32, "double": 64}
_AP = re.compile(r"ap_(u?)int\s*<\s*([^>]+?)\s*>")
_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)\s+(.+?)\s*$")
_CONST = re.compile(r"\bconst\s+(?:int|unsigned|long|short)\s+(\w+)\s*=\s*([^;]+);")
_TYPEDEF = re.compile(r"\btypedef\s+(.+?)\s+(\w+)\s*;")
_FUNC = re.compile(r"^(?:static\s+|inline\s+)*[\w:<>, ]+?[\s\*&]+(\w+)\s*\(([^;{]*)\)\s*\{")
_FOR = re.compile(r"\bfor\s*\(\s*(?:int|unsigned)\s+(\w+)\s*=\s*([^;]+);\s*\w+\s*(<=?)\s*([^;]+);")
_ARRAY = re.compile(r"^\s*(?:static\s+)?(?:const\s+)?([A-Za-z_][\w:]*(?:\s*<[^;=]*?>)?)\s+(\w+)\s*"
                    r"((?:\[[^\]]+\])+)\s*;")
_DECL = re.compile(r"(?:^|[(,;{]\s*|\s)(?:const\s+)?([A-Za-z_][\w:]*(?:\s*<[^;=()]*?>)?)\s+\*?\s*(\w+)\s*"
                   r"(?=[=\[;,)])")
_STREAM = re.compile(r"^\s*(?:static\s+)?hls::stream\s*<\s*(.+?)\s*>\s+(\w+)\s*;")
_FLOAT_ASSIGN = re.compile(r"^\s*(?:const\s+)?(?:float\s+|double\s+)?(\w+)\s*(?:\[[^\]]*\]\s*)?([-+*/]?=)(?!=)\s*(.+);\s*$")
_PRODUCT = re.compile(r"^\s*(?:[\w:<>]+\s+)?(\w+)\s*(\+?=)\s*(.+);\s*$")
_CALL = re.compile(r"\b(\w+)\s*\(")
_FLOAT_TYPES = {"float": 32, "double": 64}
_FLOAT_FUNCS = {"exp": "exp", "expf": "exp", "erf": "erf", "erff": "erf", "tanh": "tanh", "tanhf": "tanh",
                "sqrt": "sqrt", "sqrtf": "sqrt", "rsqrt": "sqrt", "log": "log", "logf": "log", "pow": "pow",
                "powf": "pow"}
_NUMBER = re.compile(r"(?<![\w.])\d+\.?\d*(?:[eE][+-]?\d+)?[fFlLuU]*")
_BINARY = {"+": "fadd", "-": "fsub", "*": "fmul", "/": "fdiv"}
_PRAGMA = re.compile(r"^\s*#\s*pragma\s+HLS\s+(\w+)(.*)$", re.IGNORECASE)
_OPTION = re.compile(r"(\w+)\s*=\s*([\w.]+)")


class SourceError(ValueError):
    """Kernel sources that cannot be read as the estimate needs them; the message names the file."""


@dataclass
class Loop:
    """A `for` loop: trip count (None when not a constant), unroll factor and whether it is pipelined."""

    var: str
    trip: int | None
    line: int
    parent: Loop | None
    unroll: int | None = None  # 0: complete
    pipelined: bool = False
    tripcount_max: int | None = None

    def in_pipeline(self) -> bool:
        """True inside a pipelined loop (such loops are unrolled completely by HLS)."""
        p = self.parent
        while p is not None:
            if p.pipelined:
                return True
            p = p.parent
        return False


@dataclass
class Array:
    name: str
    ctype: str
    bits: int | None
    dims: list[int]
    partitions: list[dict[str, str]] = field(default_factory=list)
    storage: dict[str, str] = field(default_factory=dict)
    stream_depth: int | None = None


@dataclass
class Product:
    """A product ``target = a * b``: operand widths (None: unknown), `BIND_OP` impl (None: not given)."""

    target: str
    widths: tuple[int | None, int | None]
    line: int
    loop: Loop | None
    impl: str | None = None


@dataclass
class FloatOp:
    """One floating-point operator core: `kind` (fadd, fmul, fdiv, exp, ...), `impl` from BIND_OP or None."""

    target: str
    kind: str
    bits: int
    line: int
    loop: Loop | None
    impl: str | None = None


@dataclass
class Function:
    name: str
    params: dict[str, str]
    loops: list[Loop] = field(default_factory=list)
    arrays: dict[str, Array] = field(default_factory=dict)
    products: list[Product] = field(default_factory=list)
    float_ops: list[FloatOp] = field(default_factory=list)
    calls: list[tuple[str, Loop | None]] = field(default_factory=list)
    interfaces: list[dict[str, str]] = field(default_factory=list)
    dataflow: bool = False
    types: dict[str, str] = field(default_factory=dict)


@dataclass
class Source:
    """Everything read from a kernel's sources."""

    consts: dict[str, int]
    types: dict[str, int | None]
    functions: dict[str, Function]
    notes: list[str]

    def bits(self, ctype: str) -> int | None:
        """Width in bits of a C or AP type spelled in the source (typedefs resolved)."""
        return type_bits(ctype, self.types, self.consts)

    def copies(self, top: str) -> dict[str, int]:
        """Hardware copies of every function reachable from `top` (unrolled call sites multiply)."""
        piped = self.pipelined_callees(top)
        out: dict[str, int] = {}

        def visit(name: str, n: int, depth: int) -> None:
            if name not in self.functions or depth > 32:
                return
            out[name] = out.get(name, 0) + n
            for callee, loop in self.functions[name].calls:
                visit(callee, n * unrolled_copies(loop, name in piped), depth + 1)

        visit(top, 1, 0)
        return out

    def pipelined_callees(self, top: str) -> set[str]:
        """Functions called from inside a pipelined loop (their loops are unrolled completely)."""
        out: set[str] = set()
        seen: set[tuple[str, bool]] = set()
        todo = [(top, False)]
        while todo:
            name, piped = todo.pop()
            f = self.functions.get(name)
            if f is None or (name, piped) in seen:
                continue
            seen.add((name, piped))
            if piped:
                out.add(name)
            for callee, loop in f.calls:
                todo.append((callee, piped or (loop is not None and (loop.pipelined or loop.in_pipeline()))))
        return out


def unrolled_copies(loop: Loop | None, in_pipelined_function: bool = False) -> int:
    """Copies of a statement inside `loop` that unrolling makes: the product over the enclosing loops of
    their UNROLL factor (complete: the trip count), a loop nested in a pipelined loop (or in a function
    called from one) counting as completely unrolled, as Vitis HLS does."""
    n = 1
    while loop is not None:
        if loop.unroll is not None or in_pipelined_function or loop.in_pipeline():
            factor = loop.unroll or loop.trip
            if factor is None:
                raise ValueError(f"loop over {loop.var!r} (line {loop.line}) is unrolled but its bound is not "
                                 "a constant")
            n *= factor
        loop = loop.parent
    return n


def eval_int(expr: str, consts: dict[str, int]) -> int | None:
    """Value of an integer constant expression over `consts`, or None when it is not constant."""
    expr = expr.strip().rstrip("uUlL")
    try:
        tree = ast.parse(expr.replace("/", "//").replace("////", "//"), mode="eval")
    except SyntaxError:
        return None
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load, ast.Add, ast.Sub,
               ast.Mult, ast.FloorDiv, ast.Mod, ast.USub, ast.LShift, ast.RShift)
    for node in ast.walk(tree):
        if not isinstance(node, allowed) or (isinstance(node, ast.Name) and node.id not in consts):
            return None
        if isinstance(node, ast.Constant) and not isinstance(node.value, int):
            return None
    try:
        return int(eval(compile(tree, "<const>", "eval"), {"__builtins__": {}}, dict(consts)))
    except (ArithmeticError, ValueError):
        return None


def type_bits(ctype: str, types: dict[str, int | None], consts: dict[str, int]) -> int | None:
    """Width of `ctype`: ap_(u)int<W> (+1 for unsigned stays W), C integers, typedef names."""
    base = " ".join(ctype.replace("const", " ").replace("&", " ").replace("*", " ").split())
    m = _AP.fullmatch(base)
    if m:
        return eval_int(m.group(2), consts)
    if base in _C_TYPES:
        return _C_TYPES[base]
    return types.get(base)


def _strip_comments(text: str) -> str:
    """The text without comments, a statement split over lines (open brackets) joined onto its first line."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.DOTALL)
    lines: list[str] = []
    carry = 0
    for line in re.sub(r"//[^\n]*", "", text).splitlines():
        if carry > 0:
            lines[-1] += " " + line.strip()
            lines.append("")  # keep line numbers
        else:
            lines.append(line)
        carry += line.count("[") + line.count("(") - line.count("]") - line.count(")")
        carry = max(carry, 0)
    return "\n".join(lines)


def _options(rest: str) -> dict[str, str]:
    opts = {k.lower(): v for k, v in _OPTION.findall(rest)}
    for word in rest.split():
        if "=" not in word:
            opts.setdefault(word.lower(), "")
    return opts


def _literal_bits(expr: str) -> int | None:
    """Width of an integer literal operand (two's complement), None when `expr` is not one."""
    m = re.fullmatch(r"\(?\s*(-?\d+)[uUlL]*\s*\)?", expr.strip())
    return None if m is None else int(m.group(1)).bit_length() + 1


def _operand(expr: str) -> str | None:
    """The variable an operand expression reads (``x[l]`` → ``x``), or None for anything else."""
    m = re.fullmatch(r"\(?\s*(\w+)\s*(?:\[[^\]]*\]\s*)*\)?(?:\.range\([^)]*\))?", expr.strip())
    return m.group(1) if m else None


def _float_kinds(op: str, rhs: str) -> list[str]:
    """Floating-point operator cores of ``target op= rhs``: top-level + - * / and math calls."""
    kinds = [_BINARY[op[0]]] if op != "=" and op[0] in _BINARY else []
    kinds += [_FLOAT_FUNCS[f] for f in _CALL.findall(rhs) if f in _FLOAT_FUNCS]
    flat, depth, prev = _NUMBER.sub("0", rhs), 0, "("
    for ch in flat:  # operators at any depth but inside [] (index arithmetic)
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif depth == 0 and ch in _BINARY and prev not in "(=+-*/?:<>!&|,":
            kinds.append(_BINARY[ch])
        if not ch.isspace():
            prev = ch
    return kinds


def _top_level_product(rhs: str) -> tuple[str, str] | None:
    """``a * b`` when `*` is the top-level operator of `rhs` (index arithmetic inside [] is skipped)."""
    depth = 0
    for i, ch in enumerate(rhs):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "*" and depth == 0:
            left, right = rhs[:i].strip(), rhs[i + 1:].strip()
            if left and right and not any(op in left + right for op in ("+", "-", "*", "/", "?", "<<")):
                return left, right
            return None
    return None


def read_source(paths: list[Path]) -> Source:
    """Read the kernel's sources (headers first, so their constants and types are known)."""
    consts: dict[str, int] = {}
    types: dict[str, int | None] = {}
    functions: dict[str, Function] = {}
    notes: list[str] = []
    ordered = sorted(paths, key=lambda p: p.suffix not in (".h", ".hpp"))
    for path in ordered:
        try:
            text = _strip_comments(path.read_text())
        except OSError as e:
            raise SourceError(f"{path}: cannot read kernel source ({e.strerror})") from None
        _read_file(path, text, consts, types, functions, notes)
    return Source(consts, types, functions, notes)


def _read_file(path: Path, text: str, consts: dict[str, int], types: dict[str, int | None],
               functions: dict[str, Function], notes: list[str]) -> None:
    depth = 0
    func: Function | None = None
    loops: list[tuple[int, Loop]] = []  # (brace depth inside the loop, loop)
    for lineno, line in enumerate(text.splitlines(), 1):
        if (d := _DEFINE.match(line)) and (v := eval_int(d.group(2), consts)) is not None:
            consts[d.group(1)] = v
            continue
        for name, expr in _CONST.findall(line):
            if (v := eval_int(expr, consts)) is not None:
                consts[name] = v
        for ctype, name in _TYPEDEF.findall(line):
            types[name] = type_bits(ctype, types, consts)
        if func is None and depth == 0 and (m := _FUNC.match(line.strip())):
            params = {}
            for p in m.group(2).split(","):
                pm = re.match(r"\s*(.+?)[\s\*&]+(\w+)\s*(?:\[.*\])?\s*$", p)
                if pm:
                    params[pm.group(2)] = p.strip().rsplit(pm.group(2), 1)[0].strip()
            func = functions[m.group(1)] = Function(m.group(1), params, types=dict(params))
            depth += line.count("{") - line.count("}")
            continue
        loop = loops[-1][1] if loops else None
        if func is not None:
            _read_statement(path, lineno, line, func, loop, loops, depth, consts, types, notes)
        depth += line.count("{") - line.count("}")
        while loops and depth < loops[-1][0]:
            loops.pop()
        if depth == 0:
            func = None


def _read_statement(path: Path, lineno: int, line: str, func: Function, loop: Loop | None,
                    loops: list[tuple[int, Loop]], depth: int, consts: dict[str, int],
                    types: dict[str, int | None], notes: list[str]) -> None:
    where = f"{path.name}:{lineno}"
    if (p := _PRAGMA.match(line)) is not None:
        kind, opts = p.group(1).upper(), _options(p.group(2))
        if kind == "UNROLL" and loop is not None:
            loop.unroll = eval_int(opts.get("factor", "0"), consts) or 0
        elif kind == "PIPELINE" and loop is not None and opts.get("off") is None:
            loop.pipelined = True
        elif kind == "LOOP_TRIPCOUNT" and loop is not None:
            loop.tripcount_max = eval_int(opts.get("max", ""), consts)
        elif kind == "ARRAY_PARTITION" and opts.get("variable") in func.arrays:
            func.arrays[opts["variable"]].partitions.append(opts)
        elif kind == "BIND_STORAGE" and opts.get("variable") in func.arrays:
            func.arrays[opts["variable"]].storage = opts
        elif kind == "STREAM" and opts.get("variable") in func.arrays:
            func.arrays[opts["variable"]].stream_depth = eval_int(opts.get("depth", "2"), consts)
        elif kind == "BIND_OP" and opts.get("op", "").startswith("f"):
            for fop in func.float_ops:
                if fop.target == opts.get("variable") and fop.kind in (opts["op"], opts["op"].replace("fsub", "fadd")):
                    fop.impl = opts.get("impl")
        elif kind == "BIND_OP" and opts.get("op") == "mul":
            for prod in reversed(func.products):
                if prod.target == opts.get("variable"):
                    prod.impl = opts.get("impl")
                    break
            else:
                notes.append(f"{where}: BIND_OP for {opts.get('variable')!r}, which is not a product seen before it")
        elif kind == "INTERFACE":
            func.interfaces.append(opts)
        elif kind == "DATAFLOW":
            func.dataflow = True
        return
    if (f := _FOR.search(line)) is not None:
        lo, hi = eval_int(f.group(2), consts), eval_int(f.group(4), consts)
        trip = None if lo is None or hi is None else hi - lo + (f.group(3) == "<=")
        new = Loop(f.group(1), trip, lineno, loop)
        func.loops.append(new)
        loops.append((depth + 1, new))
        return
    for ctype, name in _DECL.findall(line):
        if ctype not in ("return", "else", "delete", "new"):
            func.types.setdefault(name, ctype)
    if (st := _STREAM.match(line)) is not None:
        func.arrays[st.group(2)] = Array(st.group(2), st.group(1), type_bits(st.group(1), types, consts), [2],
                                         stream_depth=2)
        return
    if (a := _ARRAY.match(line)) is not None:
        dims = [eval_int(d, consts) for d in re.findall(r"\[([^\]]+)\]", a.group(3))]
        if None in dims:
            notes.append(f"{where}: array {a.group(2)!r} has a dimension that is not a constant; not counted")
        else:
            ctype = a.group(1)
            stream = re.fullmatch(r"hls::stream\s*<\s*(.+)\s*>", ctype)
            func.arrays[a.group(2)] = Array(a.group(2), ctype, type_bits(stream.group(1) if stream else ctype,
                                                                          types, consts), [int(d) for d in dims])
    if (s := _FLOAT_ASSIGN.match(line)) is not None and func.types.get(s.group(1), "").replace(
            "const", "").strip() in _FLOAT_TYPES:
        bits = _FLOAT_TYPES[func.types[s.group(1)].replace("const", "").strip()]
        for kind in _float_kinds(s.group(2), s.group(3)):
            func.float_ops.append(FloatOp(s.group(1), kind, bits, lineno, loop))
        return
    if (s := _PRODUCT.match(line)) is not None and (ops := _top_level_product(s.group(3))) is not None:
        widths = []
        for op in ops:
            var = _operand(op)
            ctype = func.types.get(var) if var else None
            widths.append(type_bits(ctype, types, consts) if ctype else _literal_bits(op))
        if None in widths:
            notes.append(f"{where}: product {s.group(3).strip()!r}: operand width unknown")
        prod = Product(s.group(1), (widths[0], widths[1]), lineno, loop)
        func.products.append(prod)
        return
    for callee in _CALL.findall(line):
        if callee not in ("for", "if", "while", "switch", "return", "sizeof") and not callee.startswith("ap_"):
            func.calls.append((callee, loop))
