"""The `null` target: compute units that do no arithmetic, to measure the engine's host path alone."""

from __future__ import annotations

import numpy as np

from ..hw.description import Description
from ..hw.kernels import KernelInfo
from .base import ComputeUnit, Target, description_of


class NullUnit(ComputeUnit):
    """Returns a read-only zero accumulator of the call's shape (shared between calls of one shape), int32
    for accumulators of at most 32 bits as the hardware returns them."""

    def __init__(self, name: str, desc: Description) -> None:
        super().__init__(name, desc)
        self._zeros: dict[tuple[int, int], np.ndarray] = {}
        self._dtype = np.int32 if desc.arith.acc_bits <= 32 else np.int64

    def _run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        shape = (a.shape[0], b.shape[1])
        z = self._zeros.get(shape)
        if z is None:
            z = self._zeros[shape] = np.zeros(shape, self._dtype)
            z.flags.writeable = False
        return z


class NullTarget(Target):
    """Units returning zeros: results are wrong by design; only for timing the host path."""

    name = "null"
    priority = 0

    def __init__(self, units: int = 2) -> None:
        if units < 1:
            raise ValueError(f"null target: units must be >= 1, got {units}")
        self.units = units

    @classmethod
    def probe(cls) -> str | None:
        return None

    def compute_units(self, kernel: Description | KernelInfo) -> list[ComputeUnit]:
        desc = description_of(kernel)
        return [NullUnit(f"null{i}", desc) for i in range(self.units)]
