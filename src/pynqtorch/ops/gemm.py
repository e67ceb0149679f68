"""GEMM-family aten ops on the engine: mm, addmm, bmm, baddbmm, mv, addmv, dot.

`matmul` and `linear` are composite in PyTorch and reach these (linear → addmm/matmul → mm/bmm), so every
broadcasting case of matmul lands here. The second operand (B) is the one whose quantization is cached:
for linear layers it is the weight.
"""

from __future__ import annotations

import torch

from .. import engine
from ._common import NotOffloadable, accelerated, to_cpu
from .engine_bridge import gemm

aten = torch.ops.aten


def _check(*ts: torch.Tensor) -> None:
    """Operands the engine takes (else the call runs on CPU), of one dtype (else torch's error)."""
    for t in ts:
        if t.dtype not in engine.SUPPORTED_DTYPES:
            raise NotOffloadable(t.dtype)
    if len({t.dtype for t in ts}) > 1:
        raise RuntimeError(f"expected m1 and m2 to have the same dtype, but got: "
                           f"{ts[0].dtype} != {ts[1].dtype}")


def _scale_add(acc: torch.Tensor, bias: torch.Tensor | None, beta: float, alpha: float) -> torch.Tensor:
    """beta * bias + alpha * acc with torch's conventions (beta == 0 ignores NaN in bias); `acc` is the
    engine's fresh result, so a same-dtype bias is added in place."""
    if alpha != 1:
        acc = acc * alpha
    if bias is None or beta == 0:
        return acc
    bias = bias if beta == 1 else bias * beta
    if bias.dtype == acc.dtype and bias.dim() <= acc.dim() and bias.shape == acc.shape[acc.dim() - bias.dim():]:
        return acc.add_(bias)
    return acc + bias


# aten::mm(Tensor self, Tensor mat2) -> Tensor
@accelerated(aten.mm.default)
def mm(self: torch.Tensor, mat2: torch.Tensor) -> torch.Tensor:
    _check(self, mat2)
    if self.dim() != 2 or mat2.dim() != 2:
        raise RuntimeError(f"self must be a matrix (got {self.dim()}-D) and mat2 a matrix (got {mat2.dim()}-D)")
    return gemm(to_cpu(self), to_cpu(mat2), b_owner=mat2)


# aten::addmm(Tensor self, Tensor mat1, Tensor mat2, *, Scalar beta=1, Scalar alpha=1) -> Tensor
@accelerated(aten.addmm.default)
def addmm(self: torch.Tensor, mat1: torch.Tensor, mat2: torch.Tensor, *, beta: float = 1,
          alpha: float = 1) -> torch.Tensor:
    _check(mat1, mat2)
    acc = gemm(to_cpu(mat1), to_cpu(mat2), b_owner=mat2)
    return _scale_add(acc, to_cpu(self), beta, alpha)


# aten::bmm(Tensor self, Tensor mat2) -> Tensor
@accelerated(aten.bmm.default)
def bmm(self: torch.Tensor, mat2: torch.Tensor) -> torch.Tensor:
    _check(self, mat2)
    if self.dim() != 3 or mat2.dim() != 3:
        raise RuntimeError(f"batch1 must be a 3D tensor (got {self.dim()}-D), batch2 too (got {mat2.dim()}-D)")
    return gemm(to_cpu(self), to_cpu(mat2), b_owner=mat2)


# aten::baddbmm(Tensor self, Tensor batch1, Tensor batch2, *, Scalar beta=1, Scalar alpha=1) -> Tensor
@accelerated(aten.baddbmm.default)
def baddbmm(self: torch.Tensor, batch1: torch.Tensor, batch2: torch.Tensor, *, beta: float = 1,
            alpha: float = 1) -> torch.Tensor:
    _check(batch1, batch2)
    acc = gemm(to_cpu(batch1), to_cpu(batch2), b_owner=batch2)
    return _scale_add(acc, to_cpu(self), beta, alpha)


# aten::mv(Tensor self, Tensor vec) -> Tensor
@accelerated(aten.mv.default)
def mv(self: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    _check(self, vec)
    # y = A v  ==  (v^T A^T)^T: the matrix is the cached B operand.
    return gemm(to_cpu(vec).unsqueeze(0), to_cpu(self).t(), b_owner=self).squeeze(0)


# aten::addmv(Tensor self, Tensor mat, Tensor vec, *, Scalar beta=1, Scalar alpha=1) -> Tensor
@accelerated(aten.addmv.default)
def addmv(self: torch.Tensor, mat: torch.Tensor, vec: torch.Tensor, *, beta: float = 1,
          alpha: float = 1) -> torch.Tensor:
    _check(mat, vec)
    acc = gemm(to_cpu(vec).unsqueeze(0), to_cpu(mat).t(), b_owner=mat).squeeze(0)
    return _scale_add(acc, to_cpu(self), beta, alpha)


# aten::dot(Tensor self, Tensor tensor) -> Tensor
@accelerated(aten.dot.default)
def dot(self: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    _check(self, tensor)
    if self.dim() != 1 or tensor.dim() != 1:
        raise RuntimeError(f"1D tensors expected, but got {self.dim()}D and {tensor.dim()}D tensors")
    return gemm(to_cpu(self).unsqueeze(0), to_cpu(tensor).unsqueeze(1), b_owner=tensor).reshape(())


KERNELS = [mm, addmm, bmm, baddbmm, mv, addmv, dot]
