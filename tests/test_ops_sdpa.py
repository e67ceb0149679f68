"""`scaled_dot_product_attention` on zynq takes PyTorch's overrideable SDPA backend (`ops/sdpa.py`): both products
on the kernel, ref == csim bit for bit, CPU's results within int8 tolerance, the math path's fully masked rows;
training, dropout and unusual inputs keep ATen's math path."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

import pynqtorch
from pynqtorch.targets import registry

aten = torch.ops.aten
OVERRIDEABLE = "aten::_scaled_dot_product_fused_attention_overrideable"
CSIM_REASON = registry.unavailable_reason("csim")
TARGETS = ["ref"] + ([] if CSIM_REASON else ["csim"])


@pytest.fixture(autouse=True)
def _reset() -> None:
    yield
    registry.reset()


def _z(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.to("zynq")


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.cpu() - want).norm() / want.norm())


def _bool_mask(shape: tuple[int, ...], dead_row: int) -> torch.Tensor:
    """A random keep-mask (True: attend) with row `dead_row` of every head fully masked."""
    g = torch.Generator().manual_seed(3)
    m = torch.rand(shape, generator=g) > 0.3
    m[..., dead_row, :] = False
    return m


def _float_mask(shape: tuple[int, ...], dead_row: int) -> torch.Tensor:
    """An additive mask with some -inf entries and row `dead_row` all -inf."""
    g = torch.Generator().manual_seed(4)
    m = torch.randn(shape, generator=g)
    m[m > 1.0] = -math.inf
    m[..., dead_row, :] = -math.inf
    return m


# (query, key, value shapes, mask, kwargs)
CASES = {
    "plain": ((2, 3, 7, 8), (2, 3, 9, 8), (2, 3, 9, 5), None, {}),
    "scale": ((2, 3, 7, 8), (2, 3, 9, 8), (2, 3, 9, 8), None, {"scale": 0.3}),
    "negative_scale": ((2, 3, 7, 8), (2, 3, 9, 8), (2, 3, 9, 8), None, {"scale": -0.5}),
    "padding_mask": ((2, 3, 7, 8), (2, 3, 9, 8), (2, 3, 9, 8), "bert", {}),
    "float_mask_dead_row": ((2, 3, 7, 8), (2, 3, 9, 8), (2, 3, 9, 8), _float_mask((7, 9), 2), {}),
    "bool_mask_dead_row": ((2, 3, 7, 8), (2, 3, 9, 8), (2, 3, 9, 8), _bool_mask((2, 1, 7, 9), 4), {}),
    "bool_mask_full": ((2, 3, 7, 8), (2, 3, 9, 8), (2, 3, 9, 8), _bool_mask((2, 3, 7, 9), 0), {}),
    "causal": ((2, 3, 9, 8), (2, 3, 9, 8), (2, 3, 9, 8), None, {"is_causal": True}),
    "causal_short_query": ((2, 3, 4, 8), (2, 3, 9, 8), (2, 3, 9, 8), None, {"is_causal": True}),
    "causal_long_query": ((2, 3, 9, 8), (2, 3, 4, 8), (2, 3, 4, 8), None, {"is_causal": True}),
    "gqa": ((2, 4, 7, 8), (2, 2, 9, 8), (2, 2, 9, 6), _float_mask((2, 1, 7, 9), 1), {"enable_gqa": True}),
    "three_d": ((3, 7, 8), (3, 9, 8), (3, 9, 8), _bool_mask((7, 9), 5), {}),
}


def _inputs(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, dict]:
    qs, ks, vs, mask, kwargs = CASES[name]
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    q, k, v = (torch.randn(s, generator=g) for s in (qs, ks, vs))
    if isinstance(mask, str):  # BERT's extended padding mask [B, 1, 1, S]: 0 or the float minimum
        mask = torch.zeros(qs[0], 1, 1, ks[-2])
        mask[0, ..., 6:] = torch.finfo(torch.float32).min
    return q, k, v, mask, kwargs


@pytest.mark.parametrize("name", list(CASES))
def test_sdpa_on_the_kernel_matches_cpu_and_csim(name: str) -> None:
    q, k, v, mask, kwargs = _inputs(name)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kwargs)
    outs = {}
    zq, zk, zv, zmask = _z(q), _z(k), _z(v), _z(mask)
    for target in TARGETS:
        registry.use(target)
        pynqtorch.reset_report()
        got = F.scaled_dot_product_attention(zq, zk, zv, attn_mask=zmask, **kwargs)
        rep = pynqtorch.report()
        assert rep.accelerated[OVERRIDEABLE].calls == 1, rep
        # on CPU: only sdpa's own conversion of a bool mask to an additive one, before the backend runs
        assert set(rep.cpu) <= ({"aten::fill_.Scalar", "aten::where.self", "aten::scalar_tensor"}
                                if mask is not None and mask.dtype == torch.bool else set()), rep
        assert rep.engine["counters"]["kernel_calls"] >= 2  # both products
        assert got.device.type == "zynq" and got.shape == want.shape
        outs[target] = got.cpu()
    assert _rel(outs["ref"], want) < 0.02
    # fully masked rows are 0 as on CPU (the math path's _safe_softmax), not NaN
    assert torch.equal(outs["ref"].isnan(), want.isnan()) and not want.isnan().any()
    assert torch.equal(outs["ref"] == 0, want == 0)
    for target in TARGETS[1:]:
        assert torch.equal(outs[target], outs["ref"]), target


def test_bert_layout_gives_the_meta_kernels_layout() -> None:
    """Heads split from [B, L, H, E] (a transposed view): the result has the query's dim order, as the op's meta
    kernel says, so merging the heads back is a view."""
    x = torch.randn(2, 7, 3, 8)
    q = x.transpose(1, 2)
    got = F.scaled_dot_product_attention(_z(q), _z(q), _z(q))
    meta = aten._scaled_dot_product_fused_attention_overrideable(q.to("meta"), q.to("meta"), q.to("meta"))[0]
    assert got.stride() == meta.stride() and got.transpose(1, 2).is_contiguous()
    assert _rel(got, F.scaled_dot_product_attention(q, q, q)) < 0.02


def test_overrideable_op_outputs_follow_its_schema() -> None:
    """Called directly: the output and logsumexp agree with CPU's flash kernel (-inf for a fully masked row),
    the other outputs are what the op's meta kernel gives."""
    q, k, v = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, 8)
    mask = _float_mask((7, 9), 3)
    got = aten._scaled_dot_product_fused_attention_overrideable(_z(q), _z(k), _z(v), _z(mask), scale=0.4)
    meta = aten._scaled_dot_product_fused_attention_overrideable(*(x.to("meta") for x in (q, k, v, mask)),
                                                                  scale=0.4)
    out, lse = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=mask, scale=0.4)
    assert _rel(got[0], out) < 0.02
    live = torch.ones(7, dtype=torch.bool)
    live[3] = False
    assert torch.allclose(got[1].cpu()[..., live], lse[..., live], atol=0.05)
    assert (got[1].cpu()[..., 3] == -math.inf).all() and (got[0].cpu()[:, :, 3] == 0).all()
    for g, m in zip(got, meta):
        if isinstance(m, torch.Tensor):
            assert (g.shape, g.stride(), g.dtype, g.device.type) == (m.shape, m.stride(), m.dtype, "zynq")
        else:
            assert g == m


def test_overrideable_op_dropout_is_the_math_paths() -> None:
    """Dropout (only reached by calling the op directly: sdpa takes the math path for it) draws the math path's
    mask from the same generator state."""
    q, k, v = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, 8)
    torch.manual_seed(5)
    want = aten._scaled_dot_product_attention_math(q, k, v, dropout_p=0.4)[0]
    torch.manual_seed(5)
    got = aten._scaled_dot_product_fused_attention_overrideable(_z(q), _z(k), _z(v), dropout_p=0.4)[0]
    assert _rel(got, want) < 0.02
    assert _rel(got, aten._scaled_dot_product_attention_math(q, k, v)[0]) > 0.1  # something was dropped


def _choice(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> int:
    return aten._fused_sdp_choice(_z(q), _z(k), _z(v), **kwargs)


def test_choice_routes_unusual_calls_to_the_math_path() -> None:
    q = torch.randn(2, 3, 7, 8)
    over, math_ = int(SDPBackend.OVERRIDEABLE), int(SDPBackend.MATH)
    assert _choice(q, q, q) == over
    assert _choice(q, q, q, dropout_p=0.1) == math_
    assert _choice(q.double(), q.double(), q.double()) == math_
    assert _choice(q, q[:1], q[:1]) == math_  # broadcast batch
    assert _choice(q, q[:, :1], q[:, :1]) == math_  # one key head without enable_gqa: the math path broadcasts
    assert _choice(q[:, :2], q[:, :1], q[:, :1], enable_gqa=True) == over
    assert _choice(q[None], q[None], q[None]) == math_  # 5-D
    assert _choice(q, q, q, attn_mask=torch.zeros(3, 2, 3, 7, 7).to("zynq")) == math_  # mask enlarges the result
    try:
        registry.use("ref", offload="softmax")  # the math path's _softmax runs on the rows kernel selected
        assert _choice(q, q, q) == math_
    finally:
        registry.reset()
    wants_grad = q.clone().requires_grad_()
    assert _choice(wants_grad, q, q) == math_
    with torch.no_grad():
        assert _choice(wants_grad, q, q) == over


def test_training_keeps_the_math_path_and_its_gradients() -> None:
    q = torch.randn(2, 3, 7, 8, requires_grad=True)
    k, v = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    qz, kz, vz = q.detach().to("zynq").requires_grad_(), _z(k), _z(v)
    pynqtorch.reset_report()
    out = F.scaled_dot_product_attention(qz, kz, vz, is_causal=True)
    out.sum().backward()
    rep = pynqtorch.report()
    assert OVERRIDEABLE not in rep.accelerated and rep.accelerated["aten::bmm"].calls >= 2, rep
    assert _rel(qz.grad, q.grad) < 0.05
    for no_grad in (torch.no_grad, torch.inference_mode):
        with no_grad():
            pynqtorch.reset_report()
            F.scaled_dot_product_attention(qz, kz, vz, is_causal=True)
            assert pynqtorch.report().accelerated[OVERRIDEABLE].calls == 1
