"""Compute units of `map` and `rows` kernels: one call on a block of elements or rows, and its reference.

A *block unit* runs one call of a map/rows kernel: float32 input arrays by role (``x``, ``y`` for map of
``n`` elements; ``x`` of ``rows × cols``, ``weight``/``bias`` of ``cols`` for rows) and scalars (``eps``)
in, float32 outputs by role (``out``; ``mean``/``rstd`` of ``rows`` for layer norm) out. These kernels
approximate a float op, so there is no golden integer model: `reference` — torch's own op on the block —
defines what they should compute; the `ref` target runs it, `csim` and `board` run the kernel and are
judged against it by `pynqtorch verify` within the description's tolerance.
"""

from __future__ import annotations

import abc
import threading
from typing import Any

import numpy as np
import torch

from ..hw import blocks as hwb
from ..hw.families import BlockDescription, aten_op
from ..hw.kernels import KernelInfo

Arrays = dict[str, np.ndarray]


def reference(desc: BlockDescription, op: str, data: Arrays, scalars: dict[str, float]) -> Arrays:
    """What one call of `desc` computing aten op `op` should return: torch's op on the same float32 block."""
    t = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in data.items()}
    fn = aten_op(op)
    if desc.op == "map":
        inputs = [t["x"], t["y"]] if "y" in t else [t["x"]]
        return {"out": fn(*inputs, **desc.match).numpy()}
    x = t["x"]
    if op == "aten::native_layer_norm":
        out, mean, rstd = fn(x, [x.shape[-1]], t.get("weight"), t.get("bias"), float(scalars["eps"]))
        return {"out": out.numpy(), "mean": mean.reshape(-1).numpy(), "rstd": rstd.reshape(-1).numpy()}
    return {"out": fn(x, -1, False).numpy()}


class BlockUnit(abc.ABC):
    """One place a map/rows kernel call runs; `run` is thread-safe and counts calls."""

    def __init__(self, name: str, info: KernelInfo) -> None:
        self.name = name
        self.info = info
        self.desc: BlockDescription = info.desc  # type: ignore[assignment]
        self.calls = 0
        self._lock = threading.Lock()

    def run(self, op: str, data: Arrays, scalars: dict[str, float]) -> Arrays:
        """Run one call computing `op` on float32 `data` by role; returns float32 outputs by role."""
        with self._lock:
            self.calls += 1
            return self._run(op, data, scalars)

    @abc.abstractmethod
    def _run(self, op: str, data: Arrays, scalars: dict[str, float]) -> Arrays:
        """Target-specific execution of one call."""

    def close(self) -> None:
        """Release what the unit holds (buffers, libraries)."""


class RefBlockUnit(BlockUnit):
    """The reference semantics: torch's own op on the block."""

    def _run(self, op: str, data: Arrays, scalars: dict[str, float]) -> Arrays:
        return reference(self.desc, op, data, scalars)


def call_sizes(desc: BlockDescription, data: Arrays) -> dict[str, int]:
    """The sizes (``n`` or ``rows``, ``cols``) of a call on `data`."""
    if desc.op == "map":
        return {"n": int(data["x"].size)}
    rows, cols = data["x"].shape
    return {"rows": int(rows), "cols": int(cols)}


def call_words(desc: BlockDescription, data: Arrays, scalars: dict[str, float]) -> tuple[dict[str, Any], dict]:
    """Arguments by name for one call on float32 `data` (inputs encoded, outputs zeroed), and the sizes."""
    sizes = hwb.check_sizes(desc, call_sizes(desc, data))
    kwargs: dict[str, Any] = {}
    for arg in desc.args:
        if not arg.pointer:
            kwargs[arg.name] = sizes[arg.role] if arg.role in sizes else float(scalars[arg.role])
        elif hwb.is_output(arg):
            kwargs[arg.name] = np.zeros(hwb.elements(desc, arg.role, sizes), hwb.word_dtype(desc, arg))
        else:
            kwargs[arg.name] = hwb.encode(desc, arg, data[arg.role])
    return kwargs, sizes


def read_outputs(desc: BlockDescription, words: dict[str, np.ndarray], sizes: dict[str, int],
                 shape: tuple[int, ...]) -> Arrays:
    """float32 outputs by role from output words by arg name (``out`` reshaped to the input's `shape`)."""
    out = {}
    for arg in desc.args:
        if arg.pointer and hwb.is_output(arg):
            vals = hwb.decode(desc, arg, words[arg.name], hwb.elements(desc, arg.role, sizes))
            out[arg.role] = vals.reshape(shape) if arg.role == "out" else vals
    return out
