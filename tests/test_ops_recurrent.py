"""LSTM/GRU layers on zynq: one input-projection GEMM per layer and direction plus one GEMM per step."""

from __future__ import annotations

import pytest
import torch

import pynqtorch


@pytest.mark.parametrize("kind", [torch.nn.LSTM, torch.nn.GRU])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_recurrent_layer_matches_cpu_with_few_kernel_calls(kind, bidirectional, batch_first):
    torch.manual_seed(0)
    m = kind(16, 32, num_layers=2, batch_first=batch_first, bidirectional=bidirectional).eval()
    x = torch.randn(5, 7, 16)
    h0 = torch.randn(2 * (2 if bidirectional else 1), 5 if batch_first else 7, 32)
    state = (h0, torch.randn_like(h0)) if kind is torch.nn.LSTM else h0
    with torch.no_grad():
        want = m(x, state)
        pynqtorch.reset_report()
        zstate = tuple(s.to("zynq") for s in state) if isinstance(state, tuple) else state.to("zynq")
        got = m.to("zynq")(x.to("zynq"), zstate)
    rep = pynqtorch.report()
    for g, w in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want), strict=True):
        assert g.device.type == "zynq" and g.shape == w.shape and g.stride() == w.stride()
        assert ((g.cpu() - w).norm() / w.norm()).item() < 0.02
    steps = x.shape[1 if batch_first else 0]
    layers_dirs = 2 * (2 if bidirectional else 1)
    assert rep.engine["counters"]["kernel_calls"] == layers_dirs * (1 + steps)
    assert list(rep.accelerated) == [f"aten::{kind.__name__.lower()}.input"]


def test_recurrent_layer_with_gradients_uses_the_composite_and_trains():
    torch.manual_seed(1)
    m = torch.nn.LSTM(4, 8).to("zynq")
    x = torch.randn(3, 2, 4, device="zynq", requires_grad=True)
    m(x)[0].sum().backward()
    assert x.grad.shape == x.shape and m.weight_hh_l0.grad.abs().sum() > 0


def test_recurrent_layer_with_projection_matches_cpu():
    torch.manual_seed(2)
    m = torch.nn.LSTM(6, 8, proj_size=4).eval()
    x = torch.randn(4, 3, 6)
    with torch.no_grad():
        want = m(x)[0]
        got = m.to("zynq")(x.to("zynq"))[0].cpu()
    assert ((got - want).norm() / want.norm()).item() < 0.02


@pytest.mark.parametrize("kind", [torch.nn.LSTM, torch.nn.GRU])
def test_recurrent_layer_on_ref_equals_csim_bit_for_bit(kind, fresh_target):
    """ref computes each step's small product in one native pass (`engine.bind`), csim runs the kernel's C++: the
    outputs and final states are the same bits (odd sizes, no biases on one layer stack, both directions)."""
    from pynqtorch.targets import registry

    if (reason := registry.unavailable_reason("csim")) is not None:
        pytest.skip(f"csim unavailable: {reason}")
    torch.manual_seed(3)
    results = []
    for bias in (True, False):
        m = kind(7, 20, num_layers=2, bidirectional=True, bias=bias).eval().to("zynq")
        x = torch.randn(5, 3, 7).to("zynq")
        for name in ("ref", "csim"):
            registry.use(name, kernel="gemm_i8_packed")
            pynqtorch.reset_report()
            with torch.no_grad():
                results.append([t.cpu() for t in torch.utils._pytree.tree_leaves(m(x))])
            counters = pynqtorch.report().engine["counters"]
            assert counters["kernel_calls"] == 4 * (1 + 5)
            assert counters.get("host_gemms", 0) == (4 * 5 if name == "ref" else 0)
    for ref, csim in (results[0:2], results[2:4]):
        for r, c in zip(ref, csim, strict=True):
            assert torch.equal(r, c)
