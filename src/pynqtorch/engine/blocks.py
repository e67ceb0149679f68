"""Cutting tensors into calls of `map` and `rows` kernels and running them on the bound kernel's units.

`run_map` flattens its (broadcast) inputs and cuts them into blocks of at most ``limits.block`` elements;
`run_rows` views its input as ``rows × cols`` (the last dim) and cuts it into row blocks of at most
``limits.max_rows`` rows. Calls are spread over the units in parallel threads (csim and board calls release
the GIL). Inputs a kernel cannot take raise `Unsupported` with the reason, before any call: a row longer
than ``limits.max_cols``, a dtype other than float32, values outside a fixed-point format, NaN/Inf for a
kernel whose description sends them to CPU. Nothing is truncated.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..hw.blocks import format_range
from ..hw.families import BlockDescription
from ..hw.kernels import KernelInfo
from .stats import STATS


class Unsupported(Exception):
    """These inputs cannot run on the kernel; the message is the reason (the op then runs on CPU)."""


@dataclass
class Binding:
    """A map/rows kernel bound to an aten op on the active target, with the units that run its calls."""

    op: str
    info: KernelInfo
    units: list

    @property
    def desc(self) -> BlockDescription:
        return self.info.desc  # type: ignore[return-value]


def _check_values(desc: BlockDescription, t: torch.Tensor, what: str) -> None:
    if t.dtype != torch.float32:
        raise Unsupported(f"{what} is {t.dtype}; kernel {desc.name} takes float32")
    if desc.verify.nonfinite == "cpu" and not bool(torch.isfinite(t).all()):
        raise Unsupported(f"{what} holds NaN/Inf, which kernel {desc.name} leaves to the CPU")
    bounds = format_range(desc)
    if bounds is not None and t.numel():
        lo, hi = float(t.min()), float(t.max())
        if lo < bounds[0] or hi > bounds[1]:
            raise Unsupported(f"{what} spans [{lo:g}, {hi:g}], outside {desc.io.format}'s range "
                              f"[{bounds[0]:g}, {bounds[1]:g}]")


def _run_calls(b: Binding, calls: list[tuple[dict[str, np.ndarray], dict[str, float]]]) -> list[dict]:
    """Run `calls` over the binding's units (call i on unit i mod len(units)), results in call order."""
    units = b.units

    def one(i: int) -> dict[str, np.ndarray]:
        unit = units[i % len(units)]
        t0 = time.perf_counter()
        out = unit.run(b.op, *calls[i])
        STATS.unit_calls(unit.name, 1, 1, 0, time.perf_counter() - t0)
        return out

    if len(units) == 1 or len(calls) == 1:
        return [one(i) for i in range(len(calls))]
    with ThreadPoolExecutor(len(units), thread_name_prefix="pynqtorch-blocks") as pool:
        return list(pool.map(one, range(len(calls))))


def _spans(total: int, step: int) -> Iterator[slice]:
    for start in range(0, total, step):
        yield slice(start, min(start + step, total))


def run_map(b: Binding, inputs: list[torch.Tensor]) -> torch.Tensor:
    """The element-wise op of `b` on CPU tensors `inputs` (broadcast together), computed by the kernel."""
    desc = b.desc
    if len(inputs) != (2 if "y" in desc.roles else 1):
        raise Unsupported(f"kernel {desc.name} takes {2 if 'y' in desc.roles else 1} tensor input(s)")
    if len(inputs) == 2 and inputs[0].shape != inputs[1].shape:
        inputs = list(torch.broadcast_tensors(*inputs))
    for i, t in enumerate(inputs):
        _check_values(desc, t, f"input {i}")
    shape = inputs[0].shape
    flat = [t.contiguous().reshape(-1).numpy() for t in inputs]
    out = np.empty(flat[0].size, np.float32)
    if out.size == 0:
        return torch.from_numpy(out).reshape(shape)
    spans = list(_spans(out.size, desc.limits.block))
    roles = ("x", "y")[:len(flat)]
    calls = [({r: f[s] for r, f in zip(roles, flat)}, {}) for s in spans]
    for s, res in zip(spans, _run_calls(b, calls)):
        out[s] = res["out"]
    return torch.from_numpy(out).reshape(shape)


def run_rows(b: Binding, x: torch.Tensor, params: dict[str, torch.Tensor | None],
             scalars: dict[str, float]) -> dict[str, torch.Tensor]:
    """The op of `b` over the last dim of CPU tensor `x`: ``out`` shaped like `x`, per-row outputs (``mean``,
    ``rstd``) shaped ``x.shape[:-1]``. `params` are per-column tensors (weight, bias; None for identity)."""
    desc = b.desc
    if x.dim() == 0:
        raise Unsupported("a 0-dim tensor has no rows")
    cols = x.shape[-1]
    if cols > desc.limits.max_cols:
        raise Unsupported(f"rows of {cols} elements exceed kernel {desc.name}'s row buffer of "
                          f"{desc.limits.max_cols}")
    _check_values(desc, x, "input")
    extra = {}
    for role, default in (("weight", 1.0), ("bias", 0.0)):
        if role in desc.roles:
            p = params.get(role)
            p = torch.full((cols,), default) if p is None else p.reshape(-1)
            _check_values(desc, p, role)
            extra[role] = p.contiguous().numpy()
    rows = x.numel() // cols if cols else 0
    mat = x.contiguous().reshape(rows, cols).numpy()
    per_row = [a.role for a in desc.args if a.role in ("mean", "rstd")]
    outs = {"out": np.empty((rows, cols), np.float32), **{r: np.empty(rows, np.float32) for r in per_row}}
    if rows and cols:
        spans = list(_spans(rows, desc.limits.max_rows))
        calls = [({"x": mat[s], **extra}, scalars) for s in spans]
        for s, res in zip(spans, _run_calls(b, calls)):
            for role, arr in outs.items():
                arr[s] = res[role]
    result = {"out": torch.from_numpy(outs["out"]).reshape(x.shape)}
    result.update({r: torch.from_numpy(outs[r]).reshape(x.shape[:-1]) for r in per_row})
    return result
