"""Scaffolding: new kernel folders (a fixed-tile int8 GEMM) and new overlay folders, from templates."""

from __future__ import annotations

import keyword
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


def new_kernel(name: str, dest: Path, tile: int = 64, variant: Literal["dsp", "fabric"] = "dsp") -> list[Path]:
    """Create kernel folder `dest/name`; returns the files written."""
    files = render_kernel(name, tile, variant)
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
