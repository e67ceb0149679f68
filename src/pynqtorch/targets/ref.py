"""The `ref` target: compute units running the golden model (`golden_gemm`) on the host.

The golden model is exact for any call shape, so besides the description's own calls the ref units take
*large calls*: any multiple of the kernel tile up to `LARGE_CALL` per dimension, or the description's limit
if larger (K still limited by the engine's no-overflow bound). The engine then sends a whole GEMM in a few
calls and the float32 BLAS inside `golden_gemm` runs at full speed; results equal the sum of the
description-sized calls bit for bit because the engine only issues K chunks whose accumulator provably
cannot overflow.
"""

from __future__ import annotations

import numpy as np
import torch

from ..hw.description import Description, Tile
from ..hw.kernels import KernelInfo
from .base import ComputeUnit, Target, description_of, golden_gemm, golden_stack

# Per-dimension call limit of ref units in large-call mode (rounded up to a tile multiple); keeps the
# float32 copies and int64 result of one call within a few hundred MB.
LARGE_CALL = {"m": 1 << 12, "n": 1 << 12, "k": 1 << 12}


class RefUnit(ComputeUnit):
    """Runs one call with the golden model of the kernel's arithmetic (int32 results for accumulators of
    at most 32 bits, as the hardware returns them). With `any_shape` (large-call mode) edge calls come
    unpadded: padding with zeros adds nothing to the exact sums, stacks of calls (a grouped convolution's
    groups, a batched product's batches) come as one invocation, and the engine may compute small calls itself
    (`ComputeUnit.exact`)."""

    def __init__(self, name: str, desc: Description, any_shape: bool = False) -> None:
        super().__init__(name, desc)
        self.any_shape = self.stacks = self.exact = any_shape

    def _run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return golden_gemm(a, b, self.desc.arith, narrow=True)

    def run_stack(self, a: torch.Tensor, b: torch.Tensor, calls: int = 1) -> torch.Tensor:
        with self._lock:
            self.calls += calls
            return golden_stack(a, b, self.desc.arith)


class RefTarget(Target):
    """Golden-model target: always available, the default.

    `units` compute units (concurrent calls); `large_calls=False` restricts calls to the description's
    limits, as the hardware would see them.
    """

    name = "ref"
    priority = 10

    def __init__(self, units: int = 2, large_calls: bool = True) -> None:
        if units < 1:
            raise ValueError(f"ref target: units must be >= 1, got {units}")
        self.units = units
        self.large_calls = large_calls

    @classmethod
    def probe(cls) -> str | None:
        return None

    def compute_units(self, kernel: Description | KernelInfo) -> list[ComputeUnit]:
        desc = description_of(kernel)
        return [RefUnit(f"ref{i}", desc, any_shape=self.large_calls) for i in range(self.units)]

    def block_units(self, kernel: KernelInfo) -> list:
        """Units running torch's own op (the reference semantics of a map/rows kernel)."""
        from .blocks import RefBlockUnit

        return [RefBlockUnit(f"ref:{kernel.name}", kernel)]

    def call_limits(self, desc: Description) -> Tile:
        if not self.large_calls:
            return super().call_limits(desc)
        dims = {}
        for d, big in LARGE_CALL.items():
            t = getattr(desc.tile, d)
            dims[d] = max(desc.dim_limit(d), -(-big // t) * t)
        return Tile(**dims)
