"""C simulation of `map`/`rows` kernels: the kernel's own C++ (built by `csim.build`) called on word buffers.

`BlockLibrary.call(**{arg.name: words_or_scalar})` checks the call's sizes against the description before
the kernel sees them (the virtual board uses it directly); `CsimBlockUnit` encodes float32 blocks in the
description's I/O format, calls the library and decodes the outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...hw import blocks as hwb
from ...hw.families import BlockDescription
from ...hw.kernels import KernelInfo
from ..blocks import Arrays, BlockUnit, call_words, read_outputs
from .library import CsimLibrary


class BlockLibrary(CsimLibrary):
    """A loaded C-simulation build of a map/rows kernel."""

    desc: BlockDescription

    def call(self, **kwargs: np.ndarray | float) -> None:
        """Run the top function once on word buffers (by arg name) and scalars (sizes, eps)."""
        names = [a.name for a in self.desc.args]
        if set(kwargs) != set(names):
            raise TypeError(f"kernel {self.name}: call() takes arguments {names}; got {sorted(kwargs)}")
        roles = {a.role: a for a in self.desc.args}
        sizes = hwb.check_sizes(self.desc, {r: kwargs[roles[r].name] for r in ("n", "rows", "cols") if r in roles})
        values: list[Any] = []
        for arg in self.desc.args:
            value = kwargs[arg.name]
            if not arg.pointer:
                values.append(value)
                continue
            need = hwb.elements(self.desc, arg.role, sizes)
            want = hwb.word_dtype(self.desc, arg)
            if not isinstance(value, np.ndarray) or value.dtype != want or not value.flags.c_contiguous:
                what = f"{value.dtype} array" if isinstance(value, np.ndarray) else type(value).__name__
                raise TypeError(f"kernel {self.name}: buffer {arg.name!r} must be a C-contiguous {want} array, "
                                f"got {what}")
            if value.size < need:
                raise ValueError(f"kernel {self.name}: buffer {arg.name!r} has {value.size} words, needs {need} "
                                 f"for {sizes}")
            if hwb.is_output(arg) and not value.flags.writeable:
                raise TypeError(f"kernel {self.name}: output buffer {arg.name!r} is read-only")
            values += [value, need]
        self._fn(*values)


class CsimBlockUnit(BlockUnit):
    """A map/rows kernel's C simulation in this process."""

    def __init__(self, name: str, library: BlockLibrary) -> None:
        super().__init__(name, library.info)
        self.library = library

    def _run(self, op: str, data: Arrays, scalars: dict[str, float]) -> Arrays:
        kwargs, sizes = call_words(self.desc, data, scalars)
        self.library.call(**kwargs)
        return read_outputs(self.desc, kwargs, sizes, data["x"].shape)


def csim_block_units(info: KernelInfo, units: int) -> list[BlockUnit]:
    """`units` C-simulation units of `info`, each with its own copy of the library."""
    return [CsimBlockUnit(f"csim:{info.name}:{i}", BlockLibrary(info, copy=i)) for i in range(units)]
