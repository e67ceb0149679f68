"""The C ABI shim of a kernel for C simulation: one ``extern "C"`` function, `ENTRY`, generated from
`description.json`: each pointer argument becomes ``(word_t *ptr, size_t words)``, each scalar a plain
integer (or float), in the description's order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...hw.families import OUTPUT_ROLES, AnyDescription
from ...hw.packing import parse_ctype

ENTRY = "pynqtorch_csim_call"
SOURCE_EXT = (".cpp", ".cc", ".cxx", ".c")


def _raw_type(base: str, dtype_char: str, size: int) -> str:
    return base if not base.startswith("ap_") else f"{'u' if dtype_char == 'u' else ''}int{size * 8}_t"


def _output(arg: Any) -> bool:
    """Whether the kernel writes this buffer (GEMM role c, or a map/rows output)."""
    return arg.role == "c" or arg.role in OUTPUT_ROLES


def generate_shim(folder: Path, desc: AnyDescription) -> str:
    """C++ source of the extern "C" bridge: includes the kernel's sources and forwards raw buffers to the top.

    Plain integer pointers are passed through; AP-typed buffers are copied element by element into arrays
    of the AP type (and results copied back), so no layout assumption about AP classes is made.
    """
    params, before, call, after = [], [], [], []
    for arg in desc.args:
        ct = parse_ctype(arg.ctype)
        raw = _raw_type(ct.base, ct.dtype.kind, ct.dtype.itemsize)
        if not ct.pointer:
            params.append(f"{raw} {arg.name}")
            call.append(f"({ct.base}){arg.name}" if not ct.native else arg.name)
            continue
        params += [f"{raw} *{arg.name}", f"size_t {arg.name}_words"]
        if ct.native:
            call.append(arg.name)
            continue
        buf = f"{arg.name}_ap"
        before.append(f"    std::vector<{ct.base}> {buf}({arg.name}_words);")
        if not _output(arg):
            before.append(f"    for (size_t pt_i = 0; pt_i < {arg.name}_words; pt_i++) {buf}[pt_i] = {arg.name}[pt_i];")
        else:
            conv = "to_uint64" if ct.dtype.kind == "u" else "to_int64"
            after.append(f"    for (size_t pt_i = 0; pt_i < {arg.name}_words; pt_i++) "
                         f"{arg.name}[pt_i] = ({raw}){buf}[pt_i].{conv}();")
        call.append(f"{buf}.data()")
    includes = [f'#include "{s}"' for s in desc.sources if s.endswith(SOURCE_EXT)]
    return "\n".join([
        f"// Generated from {desc.name}/description.json: C ABI bridge for C simulation of {desc.top}().",
        "#include <cstddef>", "#include <cstdint>", "#include <vector>", *includes, "",
        f'extern "C" void {ENTRY}({", ".join(params)}) {{',
        *before, f"    {desc.top}({', '.join(call)});", *after, "}", "",
    ])
