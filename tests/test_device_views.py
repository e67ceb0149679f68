"""Views of zynq tensors made by the CPU metadata-only view kernels (`as_strided`, `view`...): aliasing, bounds,
modes, report."""

from __future__ import annotations

import pytest
import torch

import pynqtorch

pytestmark = pytest.mark.usefixtures("fresh_report")


def test_views_alias_and_match_cpu() -> None:
    x = torch.arange(24.0).reshape(4, 6)
    z = x.to("zynq")
    for f in (lambda t: t.t(), lambda t: t[1:, 2:].t(), lambda t: t.expand(2, 4, 6),
              lambda t: t.as_strided((3, 2), (1, 5), 3), lambda t: t.transpose(0, 1)[::2]):
        v = f(z)
        assert v.device.type == "zynq" and v.untyped_storage().data_ptr() == z.untyped_storage().data_ptr()
        assert torch.equal(v.cpu(), f(x))
    zt = z.t()
    zt.mul_(2)  # written through the view
    assert torch.equal(z.cpu(), x * 2)
    assert pynqtorch.report().to_dict()["cpu"]["aten::as_strided"]["calls"] >= 5


def test_out_of_bounds_geometry_raises_like_cpu() -> None:
    z = torch.zeros(3, 4, device="zynq")
    with pytest.raises(RuntimeError, match="out of bounds for storage"):
        z.as_strided((10, 10), (10, 1))
    with pytest.raises(RuntimeError):
        z.as_strided((2, 2), (1, 1), -1)


def test_view_autograd_and_inference_modes() -> None:
    p = torch.nn.Parameter(torch.randn(3, 4)).to("zynq")
    v = p.t()
    assert v.requires_grad and v._base is not None
    with torch.inference_mode():
        i = torch.ones(3, 4, device="zynq")
        assert i.t().is_inference()
    assert i.t().is_inference() and not p.t().is_inference()


def test_conj_and_neg_views_keep_their_bits() -> None:
    x = torch.tensor([[1 + 2j, 3 - 1j], [0 + 1j, 2 + 0j]])
    z = x.to("zynq")
    assert torch.equal(z.conj().t().cpu(), x.conj().t())
    n = torch._neg_view(torch.tensor([[1.0, 2.0], [3.0, 4.0]]).to("zynq"))
    assert torch.equal(n.t().cpu(), -torch.tensor([[1.0, 3.0], [2.0, 4.0]]))


def test_view_kernels_alias_count_and_fail_like_cpu() -> None:
    x = torch.arange(12.0).reshape(3, 4)
    z = x.to("zynq")
    v = z.view(4, 3)
    assert v.untyped_storage().data_ptr() == z.untyped_storage().data_ptr() and torch.equal(v.cpu(), x.view(4, 3))
    c = torch.tensor([1 + 2j, 3 - 1j]).to("zynq")
    r = torch.view_as_real(c)
    assert r.dtype == torch.float32 and torch.equal(r.cpu(), torch.view_as_real(c.cpu()))
    assert torch.equal(torch.view_as_complex(r).cpu(), c.cpu())
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        z.t().view(12)
    with pytest.raises(RuntimeError, match="view_as_real doesn't work on unresolved conjugated"):
        torch.view_as_real(c.conj())
    calls = pynqtorch.report().to_dict()["cpu"]
    assert calls["aten::view"]["calls"] >= 1 and calls["aten::view_as_real"]["calls"] >= 1
