"""The `csim` target: kernel calls run the kernel's own HLS C++, compiled with g++ against Xilinx AP types.

`CsimLibrary` (`csim.library`) loads one compiled kernel and calls its top function; `CsimUnit`
packs int8 tiles with `hw.packing`, calls the library and unpacks the accumulator. ctypes releases the GIL
during the call, and every unit loads its own copy of the library (so even kernels with `static` state
run safely side by side): units of one target run in parallel threads.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ...buildcache import BuildError, compiler
from ...hw.description import Description
from ...hw.kernels import KernelInfo, kernels
from ...hw.packing import call_dims, pack_operand, unpack_result, word_dtype, words_for
from ..base import ComputeUnit, Target, TargetUnavailable
from .build import ap_types_dir
from .library import CsimLibrary

DEFAULT_UNITS = 2


class CsimUnit(ComputeUnit):
    """A compute unit running the kernel's C simulation in this process."""

    def __init__(self, name: str, library: CsimLibrary) -> None:
        super().__init__(name, library.desc)
        self.library = library
        self._a, self._b, self._c = (library.desc.arg(r) for r in ("a", "b", "c"))

    def _run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        (m, k), n = a.shape, b.shape[1]
        if b.shape[0] != k:
            raise ValueError(f"{self.name}: inner dims differ: a is {a.shape}, b is {b.shape}")
        dims = call_dims(self.desc, m, n, k)
        c = np.zeros(words_for(self._c, m, n, k), word_dtype(self._c))
        kwargs: dict[str, Any] = {self._a.name: pack_operand(a, self._a), self._b.name: pack_operand(b, self._b),
                                  self._c.name: c}
        kwargs.update({arg.name: dims[arg.role] for arg in self.desc.args if arg.role in dims})
        self.library.call(**kwargs)
        return unpack_result(c, self._c, m, n)


def _kernel_info(desc: Description) -> KernelInfo:
    info = kernels().get(desc.name)
    if info is None or info.desc != desc:
        raise TargetUnavailable(f"csim: kernel {desc.name!r} is not on the kernel search path with this "
                                "description; add its folder with PYNQTORCH_KERNEL_PATH or add_kernel_path()")
    return info


class CsimTarget(Target):
    """C simulation of the kernel's HLS C++ (bit-exact with `ref`, slower; never picked over it by default)."""

    name = "csim"
    priority = -10

    def __init__(self, units: int | None = None) -> None:
        env = os.environ.get("PYNQTORCH_CSIM_UNITS")
        if units is None and env:
            if not env.isdigit() or int(env) < 1:
                raise ValueError(f"PYNQTORCH_CSIM_UNITS={env!r} is not a positive integer")
            units = int(env)
        self.units = units or DEFAULT_UNITS

    @classmethod
    def probe(cls) -> str | None:
        try:
            compiler()
            ap_types_dir()
        except (BuildError, TargetUnavailable) as e:
            return str(e)
        return None

    def compute_units(self, desc: Description | KernelInfo) -> list[ComputeUnit]:
        info = desc if isinstance(desc, KernelInfo) else _kernel_info(desc)
        return [CsimUnit(f"csim:{info.name}:{i}", CsimLibrary(info, copy=i)) for i in range(self.units)]

    def block_units(self, kernel: KernelInfo) -> list:
        """The map/rows kernel's C simulation, one library copy per unit."""
        from .blocks import csim_block_units

        return csim_block_units(kernel, self.units)
