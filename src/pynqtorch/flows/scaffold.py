"""Scaffolding: new kernel folders (a fixed-tile int8 GEMM, or a map/rows kernel for one aten op) and new
overlay folders, from templates."""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from .overlay import default_overlay, render_overlay

# Template file -> file name in the new kernel folder ({name} is the kernel name).
KERNEL_FILES = {
    "kernel.cpp": "{name}.cpp",
    "kernel.hpp": "{name}.hpp",
    "kernel_tb.cpp": "{name}_tb.cpp",
    "description.json": "description.json",
    "hls_config.cfg": "hls_config.cfg",
    "run_hls.tcl": "run_hls.tcl",
}
VARIANTS = {"dsp": "DSP48 slices", "fabric": "LUT fabric (no DSP48 slices)"}
# The B tile is held on chip in int8; keep it well inside the Zynq-7020's 4.9 Mbit of BRAM.
MAX_TILE = 256
_CPP_KEYWORDS = {"int", "char", "void", "class", "struct", "template", "typename", "namespace", "new", "delete",
                 "operator", "this", "auto", "register", "static", "const", "union", "switch", "case", "default"}


class ScaffoldError(ValueError):
    """A scaffolding request that cannot be honoured (bad name, existing folder, bad parameter)."""


def check_identifier(name: str, what: str) -> None:
    """Refuse names that cannot be a C/C++ function or file stem."""
    if not (name.isidentifier() and name.isascii()) or keyword.iskeyword(name) or name in _CPP_KEYWORDS:
        raise ScaffoldError(f"{what} {name!r} is not a C identifier (letters, digits, _; not starting with a "
                            "digit; not a keyword)")


def _fresh_folder(folder: Path) -> None:
    if folder.exists():
        raise ScaffoldError(f"{folder} already exists; refusing to overwrite it (choose another name or --dest)")


def _write_all(folder: Path, files: dict[str, str]) -> list[Path]:
    folder.mkdir(parents=True)
    written = []
    for fname, text in files.items():
        (folder / fname).write_text(text)
        written.append(folder / fname)
    return written


def render_kernel(name: str, tile: int, variant: Literal["dsp", "fabric"]) -> dict[str, str]:
    """The files of a tile×tile×tile int8 GEMM kernel folder named `name`."""
    check_identifier(name, "kernel name")
    if variant not in VARIANTS:
        raise ScaffoldError(f"variant {variant!r} is not one of {sorted(VARIANTS)}")
    if not 1 <= tile <= MAX_TILE or tile & (tile - 1):
        raise ScaffoldError(f"tile {tile} must be a power of two between 1 and {MAX_TILE}")
    values = {"NAME": name, "UNAME": name.upper(), "TILE": str(tile), "DEPTH": str(tile * tile),
              "IMPL": variant, "IMPL_TEXT": VARIANTS[variant]}
    templates = resources.files("pynqtorch.flows").joinpath("templates", "kernel")
    out = {}
    for template, target in KERNEL_FILES.items():
        text = templates.joinpath(template).read_text()
        for key, value in values.items():
            text = text.replace(f"@{key}@", value)
        out[target.format(name=name)] = text
    return out


@dataclass(frozen=True)
class OpTemplate:
    """A map or rows kernel the scaffold can write: its family, aten op, C++ (float `v` for map; `d` = x - max
    and the row's `sum` of exp(d) for rows) and double reference, and the tolerance it verifies with."""

    family: Literal["map", "rows"]
    aten: str
    expr: str
    ref: str
    tol_abs: str
    tol_rel: str = "1e-5"
    match: str = "{}"
    row: str = ""


OPS = {
    "gelu": OpTemplate("map", "aten::gelu", "0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f))",
                       "0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)))", "2e-6", match='{"approximate": "none"}'),
    "silu": OpTemplate("map", "aten::silu", "v / (1.0f + std::exp(-v))", "v / (1.0 + std::exp(-v))", "2e-6"),
    "sigmoid": OpTemplate("map", "aten::sigmoid", "1.0f / (1.0f + std::exp(-v))", "1.0 / (1.0 + std::exp(-v))",
                          "1e-7"),
    "tanh": OpTemplate("map", "aten::tanh", "std::tanh(v)", "std::tanh(v)", "1e-7"),
    "exp": OpTemplate("map", "aten::exp", "std::exp(v)", "std::exp(v)", "1e-7"),
    "softmax": OpTemplate("rows", "aten::_softmax", "std::exp(d) * k", "std::exp(d) / sum", "1e-7",
                          row="const float k = 1.0f / sum;"),
    "log_softmax": OpTemplate("rows", "aten::_log_softmax", "d - k", "d - std::log(sum)", "2e-6",
                              row="const float k = std::log(sum);"),
}


def render_op_kernel(name: str, op: str) -> dict[str, str]:
    """The files of a float32 map/rows kernel folder named `name` computing aten op `op` (a key of `OPS`)."""
    check_identifier(name, "kernel name")
    if op not in OPS:
        raise ScaffoldError(f"--op {op!r} is not one the scaffold writes; choose one of {sorted(OPS)}")
    t = OPS[op]
    values = {"NAME": name, "UNAME": name.upper(), "OP": op, "ATEN": t.aten, "EXPR": t.expr, "STORE": t.expr,
              "REF": t.ref, "TOL_ABS": t.tol_abs, "TOL_REL": t.tol_rel, "MATCH": t.match, "ROW": t.row}
    root = resources.files("pynqtorch.flows").joinpath("templates")
    out = {}
    for template, target in KERNEL_FILES.items():
        folder = "kernel" if template in ("hls_config.cfg", "run_hls.tcl") else t.family
        text = root.joinpath(folder, template).read_text()
        for key, value in values.items():
            text = text.replace(f"@{key}@", value)
        out[target.format(name=name)] = text
    return out


def new_kernel(name: str, dest: Path, tile: int = 64, variant: Literal["dsp", "fabric"] = "dsp",
               op: str | None = None) -> list[Path]:
    """Create kernel folder `dest/name` (a GEMM, or with `op` a map/rows kernel of that op); returns the files
    written."""
    files = render_kernel(name, tile, variant) if op is None else render_op_kernel(name, op)
    folder = dest / name
    _fresh_folder(folder)
    return _write_all(folder, files)


def new_overlay(name: str, kernels: list[str], dest: Path, clock_mhz: int = 100) -> list[Path]:
    """Create overlay folder `dest/name` with one IP per kernel; returns the files written."""
    check_identifier(name, "overlay name")
    if not kernels:
        raise ScaffoldError("an overlay needs at least one kernel (--kernel NAME)")
    for k in kernels:
        check_identifier(k, "kernel name")
    files = render_overlay(default_overlay(name, kernels, clock_mhz))
    folder = dest / name
    _fresh_folder(folder)
    return _write_all(folder, files)
