"""Every GEMM-family overload PyTorch registers (functional, `out=`, in-place, fused activation) runs on the
kernel with CPU's semantics: a sweep over `ops.gemm.family_overloads()`, which reads PyTorch's registry.

Each overload is called on zynq and on CPU with the same arguments. The kernel must have run (engine call
counter), and the result must have CPU's dtype, shape and strides, return the `out=` tensor / `self` itself,
and CPU's values: exactly for integers (with float alpha/beta converted as CPU converts them), within the
int8 scheme's norm-wise tolerance for floats. Invalid calls raise CPU's error.
"""

from __future__ import annotations

import zlib
from typing import Any

import pytest
import torch

import pynqtorch
from pynqtorch.ops.gemm import family_overloads

M, K, N, B = 6, 9, 5, 3


def _operands(base: str, dtype: torch.dtype) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Arguments of `base`'s functional form, `self` of the result's full shape (in-place forms need it)."""
    g = torch.Generator().manual_seed(zlib.crc32(base.encode()))  # str hash() differs per process

    def r(*shape: int) -> torch.Tensor:
        if dtype.is_floating_point:
            return torch.randn(*shape, generator=g, dtype=dtype)
        return torch.randint(-50, 50, shape, generator=g, dtype=dtype)

    scal = {"beta": 1.5, "alpha": 0.5}
    return {
        "mm": ([r(M, K), r(K, N)], {}),
        "addmm": ([r(M, N), r(M, K), r(K, N)], scal),
        "_addmm_activation": ([r(M, N), r(M, K), r(K, N)], {"use_gelu": dtype.is_floating_point}),
        "bmm": ([r(B, M, K), r(B, K, N)], {}),
        "baddbmm": ([r(B, M, N), r(B, M, K), r(B, K, N)], scal),
        "addbmm": ([r(M, N), r(B, M, K), r(B, K, N)], scal),
        "mv": ([r(M, K), r(K)], {}),
        "addmv": ([r(M), r(M, K), r(K)], scal),
        "addr": ([r(M, N), r(M), r(N)], scal if dtype.is_floating_point else {"beta": 2, "alpha": -3}),
        "dot": ([r(K), r(K)], {}),
        "vdot": ([r(K), r(K)], {}),
    }[base]


def _call(op: Any, tensors: list[torch.Tensor], kwargs: dict[str, Any], device: str) -> tuple[Any, Any]:
    """Call `op` on copies of `tensors` on `device` (the report reset after the copies); returns (result,
    the tensor the result must be)."""
    ts = [t.to(device, copy=True) for t in tensors]
    kw = dict(kwargs)
    expected = None
    if any(a.name == "out" for a in op._schema.arguments):
        kw["out"] = expected = torch.empty(0, dtype=tensors[0].dtype, device=device)
    elif op._schema.name.endswith("_"):
        expected = ts[0]
    pynqtorch.reset_report()
    return op(*ts, **kw), expected


CASES = [pytest.param(op, base, id=str(op)) for op, base in family_overloads()]


def test_the_sweep_covers_the_family() -> None:
    names = {str(op) for op, _ in family_overloads()}
    for n in ("aten.mm.out", "aten.addmm.out", "aten.bmm.out", "aten.addmm_.default", "aten.baddbmm_.default",
              "aten.addbmm.default", "aten.addbmm.out", "aten.addbmm_.default", "aten.addr.default",
              "aten.addr.out", "aten.addr_.default", "aten._addmm_activation.default",
              "aten._addmm_activation.out", "aten.addmv_.default", "aten.baddbmm.out", "aten.mv.out",
              "aten.dot.out", "aten.vdot.out"):
        assert n in names
    assert "aten.mm.dtype" not in names  # CPU has no kernel: the fallback raises CPU's error


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
@pytest.mark.parametrize("op,base", CASES)
def test_overload_runs_on_the_kernel_with_cpu_semantics(op: Any, base: str, dtype: torch.dtype) -> None:
    tensors, kwargs = _operands(base, dtype)
    want, _ = _call(op, tensors, kwargs, "cpu")
    got, got_is = _call(op, tensors, kwargs, "zynq")
    assert pynqtorch.report().engine["counters"].get("kernel_calls", 0) > 0
    assert not pynqtorch.report().cpu
    if got_is is not None:
        assert got is got_is
    assert (got.device.type, got.dtype, got.shape, got.stride()) == ("zynq", want.dtype, want.shape, want.stride())
    if dtype.is_floating_point:
        err = (got.cpu() - want).norm() / want.norm()
        assert err < 0.03, err
    else:
        assert torch.equal(got.cpu(), want)


@pytest.mark.parametrize("bad", ["dtype", "rank"])
@pytest.mark.parametrize("op,base", CASES)
def test_invalid_calls_raise_cpus_error(op: Any, base: str, bad: str) -> None:
    """Operands of different dtypes (where CPU refuses them) or a wrong rank: the error CPU gives."""
    tensors, kwargs = _operands(base, torch.float32)
    tensors[-1] = tensors[-1].double() if bad == "dtype" else tensors[-1].expand(2, *tensors[-1].shape)
    if bad == "dtype" and base == "addr":
        pytest.skip("addr promotes operands of different dtypes")
    with pytest.raises(Exception) as cpu_err:
        _call(op, tensors, kwargs, "cpu")
    with pytest.raises(type(cpu_err.value)) as zynq_err:
        _call(op, tensors, kwargs, "zynq")
    assert str(zynq_err.value) == str(cpu_err.value)


def test_out_of_the_right_shape_keeps_its_strides() -> None:
    """A correctly shaped, non-contiguous `out=` is written in place, like CPU's."""
    a, b = torch.randn(M, K), torch.randn(K, N)
    out = torch.empty(N, M).to("zynq").t()
    r = torch.mm(a.to("zynq"), b.to("zynq"), out=out)
    assert r is out and out.stride() == (1, M)
    assert ((out.cpu() - a @ b).norm() / (a @ b).norm()) < 0.03
