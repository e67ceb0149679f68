"""Which non-GEMM aten ops run on map/rows kernels: the offload selection and per-op kernel choice.

``use(offload=...)`` or ``PYNQTORCH_OFFLOAD`` takes ``gemm`` (the default: only the GEMM family runs on
kernels), ``all`` (every aten op some map/rows kernel declares), or op names (a list, or a comma-separated
string) such as ``gelu,softmax`` or ``aten::native_layer_norm``. GEMM ops always run on the GEMM kernel.
An op goes to the highest-priority kernel declaring it that the active target can run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..hw.kernels import KernelInfo, kernels, kernels_for_op
from .base import Target, TargetUnavailable

ENV_OFFLOAD = "PYNQTORCH_OFFLOAD"
# Friendly names of the ops whose aten name is private.
ALIASES = {"softmax": "aten::_softmax", "log_softmax": "aten::_log_softmax", "layer_norm": "aten::native_layer_norm"}

OffloadSpec = str | Sequence[str] | None


@dataclass(frozen=True)
class Offload:
    """The selection: `ops` (aten names) or every op with a kernel (`ops` None)."""

    ops: frozenset[str] | None

    def selects(self, aten: str) -> bool:
        return self.ops is None or aten in self.ops

    def __str__(self) -> str:
        return "all" if self.ops is None else ",".join(sorted(self.ops)) or "gemm"


def declared_ops() -> dict[str, list[str]]:
    """Every aten op declared by a map/rows kernel on the search path, with its kernels (best first)."""
    ops = sorted({op for k in kernels().values() if k.desc.op != "gemm" for op in k.desc.aten})
    return {op: [k.name for k in kernels_for_op(op)] for op in ops}


def _aten_name(name: str) -> str:
    name = name.strip()
    return ALIASES.get(name, name if name.startswith("aten::") else f"aten::{name}")


def parse_offload(spec: OffloadSpec) -> Offload:
    """The selection `spec` names (None: ``PYNQTORCH_OFFLOAD``, else ``gemm``); ValueError naming an op no
    kernel implements."""
    if spec is None:
        spec = os.environ.get(ENV_OFFLOAD, "") or "gemm"
    names = [s for s in (spec.split(",") if isinstance(spec, str) else list(spec)) if s.strip()]
    if [n.strip() for n in names] == ["all"]:
        return Offload(None)
    known = declared_ops()
    ops = set()
    for name in names:
        if name.strip() == "gemm":
            continue
        aten = _aten_name(name)
        if aten not in known:
            raise ValueError(f"offload: no map/rows kernel implements {aten} (from {name!r}); kernels implement "
                             f"{sorted(known) or 'nothing'}; use 'gemm', 'all' or some of these")
        ops.add(aten)
    return Offload(frozenset(ops))


def choose_kernel(target: Target, aten: str, build: dict[str, list | str]) -> tuple[KernelInfo, list] | str:
    """The highest-priority kernel for `aten` that `target` runs, with its units, or why there is none.

    `build` caches units (or the reason they are unavailable) by kernel name for the target's lifetime.
    """
    reasons = []
    for info in kernels_for_op(aten):
        if info.name not in build:
            try:
                build[info.name] = target.block_units(info)
            except TargetUnavailable as e:
                build[info.name] = str(e)
        units = build[info.name]
        if isinstance(units, list):
            return info, units
        reasons.append(f"{info.name}: {units}")
    return "; ".join(reasons) or f"no kernel implements {aten}"
