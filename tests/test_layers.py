"""The layering of docs/architecture.md holds in the code's own imports: no import runs up the layers or
sideways between packages of one layer, and no two modules import each other in a circle.

Every import counts, lazy ones inside functions and ``TYPE_CHECKING`` ones included.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pynqtorch

PACKAGE = Path(pynqtorch.__file__).parent
DOC = Path(__file__).parents[1] / "docs" / "architecture.md"
ROOT = "pynqtorch"  # the package's own __init__ is a layer of its own


def doc_layers(text: str) -> list[list[str]]:
    """The rows of the layer table between the ``layers:begin`` / ``layers:end`` markers, top first: the
    package names before each row's ``—``."""
    block = re.search(r"<!-- layers:begin -->\s*```\w*\n(.*?)```\s*<!-- layers:end -->", text, re.DOTALL)
    assert block, f"{DOC} has no layer table between <!-- layers:begin --> and <!-- layers:end -->"
    return [line.split("—")[0].split() for line in block.group(1).splitlines() if line.strip()]


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__) for every module of pynqtorch."""
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def imports(mods: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    """Module -> the pynqtorch modules it imports (``from x import y`` counts `x.y` when that is a module)."""
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                if t.split(".")[0] != ROOT:
                    continue
                while t not in mods:
                    t = t.rsplit(".", 1)[0]
                if t != name:
                    found.add(t)
        graph[name] = found
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def test_layer_table_names_every_package_once() -> None:
    rows = doc_layers(DOC.read_text())
    listed = [p for row in rows for p in row]
    assert len(listed) == len(set(listed)), f"a package is listed twice: {listed}"
    assert set(listed) == {package_of(m) for m in modules()}


def test_no_import_runs_up_or_sideways() -> None:
    rank = {p: i for i, row in enumerate(doc_layers(DOC.read_text())) for p in row}
    bad = sorted(f"{src} -> {dst} ({package_of(src)} may not import {package_of(dst)})"
                 for src, dsts in imports(modules()).items() for dst in dsts
                 if package_of(src) != package_of(dst) and rank[package_of(src)] >= rank[package_of(dst)])
    assert not bad, "imports against docs/architecture.md's layers:\n  " + "\n  ".join(bad)


def test_no_import_cycle() -> None:
    mods = modules()
    graph = imports(mods)

    def ancestor(pkg: str, of: str) -> bool:  # importing a submodule runs its package's __init__ first
        return mods[pkg][1] and of.startswith(pkg + ".")

    cycles, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if ancestor(n, m):
                continue
            if state.get(n) == "open":
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(mods):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_the_checks_see_what_they_forbid() -> None:
    """The parser finds relative, lazy and TYPE_CHECKING imports, and the table is read in order."""
    graph = imports(modules())
    assert "pynqtorch.hostops.patches" in graph["pynqtorch.engine.api"]  # `from ..hostops.patches import`
    assert "pynqtorch.engine" in graph["pynqtorch.ops.gemm"]  # `from .. import engine`
    assert "pynqtorch.targets.csim" in graph["pynqtorch.sim.server"]  # imported inside a function
    text = "<!-- layers:begin -->\n```text\na b — top\nc — bottom\n```\n<!-- layers:end -->"
    assert doc_layers(text) == [["a", "b"], ["c"]]
