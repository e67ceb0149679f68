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
    for given, z in zip(torch.utils._pytree.tree_leaves(state), torch.utils._pytree.tree_leaves(zstate), strict=True):
        assert torch.equal(z.cpu(), given)  # the initial states are not written
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
            assert counters.get("host_gemms", 0) == (4 * (1 + 5) if name == "ref" else 0)  # the projections too
    for ref, csim in (results[0:2], results[2:4]):
        for r, c in zip(ref, csim, strict=True):
            assert torch.equal(r, c)


@pytest.mark.parametrize("kind", [torch.nn.LSTM, torch.nn.GRU])
def test_recurrent_layer_with_a_nan_input_equals_csim_and_keeps_cpus_nan_rows(kind, fresh_target):
    """A NaN in one sequence's input: on ref the native steps stop where that row's hidden state is NaN and the
    remaining steps take the general path; the results equal csim's (same bits, NaN in the same places) and NaN sits
    in the same rows as on CPU."""
    from pynqtorch.targets import registry

    if (reason := registry.unavailable_reason("csim")) is not None:
        pytest.skip(f"csim unavailable: {reason}")
    torch.manual_seed(4)
    m = kind(6, 16, num_layers=2).eval()
    x = torch.randn(5, 3, 6)
    x[2, 1, 4] = float("nan")
    with torch.no_grad():
        want = torch.utils._pytree.tree_leaves(m(x))
        mz, xz = m.to("zynq"), x.to("zynq")
        results = []
        for name in ("ref", "csim"):
            registry.use(name, kernel="gemm_i8_packed")
            pynqtorch.reset_report()
            results.append([t.cpu() for t in torch.utils._pytree.tree_leaves(mz(xz))])
            counters = pynqtorch.report().engine["counters"]
            assert counters["kernel_calls"] == 2 * (1 + 5)
            # ref: in each layer the steps at times 0-2 natively (time 2 turns row 1's hidden state NaN), the others not
            assert counters.get("host_gemms", 0) == (2 * 3 if name == "ref" else 0)
    for r, c, w in zip(*results, want, strict=True):
        torch.testing.assert_close(r, c, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(r.isnan(), w.isnan())


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_recurrent_layer_in_other_float_dtypes_matches_cpu(dtype):
    """Float dtypes other than float32 run each step's cell with torch's own ops."""
    torch.manual_seed(5)
    m = torch.nn.GRU(8, 16, bidirectional=True).eval().to(dtype)
    x = torch.randn(4, 2, 8, dtype=dtype)
    with torch.no_grad():
        want = m(x)[0].float()
        got = m.to("zynq")(x.to("zynq"))[0].cpu()
    assert got.dtype == dtype
    assert ((got.float() - want).norm() / want.norm()).item() < 0.03


@pytest.mark.parametrize("kind", [torch.nn.LSTM, torch.nn.GRU])
def test_recurrent_layer_gives_the_same_bits_without_native_passes(kind, fresh_target, monkeypatch):
    """Without the native library (as without a C++ compiler) the steps run as unit calls and `ops.cells`' torch
    ops: the same bits as the native steps."""
    from pynqtorch import hostops

    if hostops.library() is None:
        pytest.skip("no C++ compiler for the native passes")
    torch.manual_seed(6)
    m = kind(5, 12, num_layers=2, bidirectional=True).eval().to("zynq")
    x = torch.randn(4, 3, 5).to("zynq")
    results = []
    for native in (True, False):
        if not native:
            monkeypatch.setattr(hostops, "library", lambda: None)
        pynqtorch.reset_report()
        with torch.no_grad():
            results.append([t.cpu() for t in torch.utils._pytree.tree_leaves(m(x))])
        assert (pynqtorch.report().engine["counters"].get("host_gemms", 0) > 0) == native
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)
