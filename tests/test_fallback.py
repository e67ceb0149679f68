"""The CPU fallback: aliasing, in-place and out= semantics, strict mode, report, profiler, autograd."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import pynqtorch

ZYNQ = torch.device("zynq", 0)


pytestmark = pytest.mark.usefixtures("fresh_report")


def cpu_calls() -> dict[str, int]:
    return {k: v["calls"] for k, v in pynqtorch.report().to_dict()["cpu"].items()}


# ---- views and in-place ------------------------------------------------------------------------------------

def test_views_alias_their_base() -> None:
    x = torch.arange(12.0)
    z = x.to("zynq")
    v = z.view(3, 4)
    t = v.t()
    s = t[1:, ::2]
    assert v.untyped_storage().data_ptr() == z.untyped_storage().data_ptr()
    s.fill_(-1.0)
    x.view(3, 4).t()[1:, ::2].fill_(-1.0)
    assert torch.equal(z.cpu(), x)
    d = z.detach()
    d[0] = 42.0
    assert z[0].item() == 42.0
    u = z.unsqueeze(0).expand(2, 12)
    assert u.stride() == (0, 1) and torch.equal(u.cpu()[1], z.cpu())


def test_views_under_inference_mode_follow_their_base() -> None:
    x = torch.arange(10.0)
    z = x.to("zynq")
    c = torch.randn(4, dtype=torch.complex64)
    zc = c.to("zynq")
    with torch.inference_mode():
        v = z[2:5]
        assert not v.is_inference() and torch.equal(v.cpu(), x[2:5])
        fresh = torch.arange(4.0).to("zynq")
        assert fresh.is_inference() and fresh[1:].is_inference()
        assert torch.equal(zc.conj()[1:].cpu(), c.conj()[1:])
        z.view(2, 5)[0].add_(1)
        y = (z * 2)[::2]
        assert y.is_inference()
    expect = x.clone()
    expect[:5] += 1
    assert torch.equal(z.cpu(), expect) and torch.equal(y.cpu(), (expect * 2)[::2])
    v.mul_(2)
    assert torch.equal(z.cpu()[2:5], expect[2:5] * 2)


def test_shape_changing_in_place_ops_keep_data_consistent() -> None:
    x = torch.arange(6.0).reshape(2, 3)
    z = x.to("zynq")
    z.t_()
    x.t_()
    assert z.shape == (3, 2) and torch.equal(z.cpu(), x)
    z.unsqueeze_(0)
    z.transpose_(0, 2)
    x.unsqueeze_(0)
    x.transpose_(0, 2)
    assert torch.equal(z.cpu(), x)
    z.squeeze_()
    x.squeeze_()
    assert torch.equal(z.cpu(), x)
    z.as_strided_((2, 2), (1, 2), 1)
    x.as_strided_((2, 2), (1, 2), 1)
    assert torch.equal(z.cpu(), x)


def test_in_place_ops_mutate_and_return_self() -> None:
    z = torch.ones(2, 3, device="zynq")
    r = z.add_(2).mul_(torch.tensor(3.0))
    assert r is z and torch.equal(z.cpu(), torch.full((2, 3), 9.0))
    z[0].zero_()
    z[:, 1] += 1
    expect = torch.full((2, 3), 9.0)
    expect[0] = 0
    expect[:, 1] += 1
    assert torch.equal(z.cpu(), expect)


def test_out_variants_write_into_the_given_tensor() -> None:
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    za, zb = a.to("zynq"), b.to("zynq")
    out = torch.empty(3, 4, device="zynq")
    ptr = out.untyped_storage().data_ptr()
    r = torch.add(za, zb, alpha=2, out=out)
    assert r is out and out.untyped_storage().data_ptr() == ptr
    assert torch.equal(out.cpu(), torch.add(a, b, alpha=2))
    vals = torch.empty(3, device="zynq")
    idx = torch.empty(3, dtype=torch.long, device="zynq")
    rv, ri = torch.max(za, 1, out=(vals, idx))
    assert rv is vals and ri is idx
    assert torch.equal(vals.cpu(), a.max(1).values) and torch.equal(idx.cpu(), a.max(1).indices)
    strided = torch.zeros(4, 3, device="zynq").t()
    torch.mul(za, 2, out=strided)
    assert torch.equal(strided.cpu(), a * 2)


def test_out_of_size_zero_is_resized() -> None:
    a = torch.randn(5, 2)
    out = torch.empty(0, device="zynq")
    torch.sin(a.to("zynq"), out=out)
    assert out.shape == (5, 2) and torch.equal(out.cpu(), torch.sin(a))
    assert torch.zynq.memory_allocated() >= out.numel() * 4
    again = out.view(-1)
    assert torch.equal(again.cpu(), torch.sin(a).view(-1))
    cat_out = torch.empty(0, device="zynq")
    torch.cat([a.to("zynq"), a.to("zynq")], out=cat_out)
    assert torch.equal(cat_out.cpu(), torch.cat([a, a]))


def test_out_resize_of_a_tensor_with_views_keeps_every_alias_readable() -> None:
    a = torch.randn(6)
    out = torch.zeros(2, device="zynq")
    view = out[:1]
    with pytest.warns(UserWarning, match="resized"):
        torch.exp(a.to("zynq"), out=out)
    assert torch.equal(out.cpu(), torch.exp(a))
    assert view.shape == (1,) and view.cpu().item() == torch.exp(a)[0].item()
    assert out.untyped_storage().nbytes() == 24


def test_resize_keeps_data_and_grows() -> None:
    z = torch.arange(4.0).to("zynq")
    z.resize_(2, 2)
    assert torch.equal(z.cpu(), torch.arange(4.0).reshape(2, 2))
    z.resize_(3, 3)
    assert z.shape == (3, 3) and torch.equal(z.cpu().view(-1)[:4], torch.arange(4.0))
    z.resize_(0)
    assert z.numel() == 0


def test_set_points_a_tensor_at_another_storage() -> None:
    base = torch.arange(6.0).to("zynq")
    t = torch.empty(0, device="zynq")
    t.set_(base)
    t[0] = 7.0
    assert base[0].item() == 7.0
    u = torch.empty(0, device="zynq").set_(base.untyped_storage(), 2, (2, 2), (1, 2))
    assert torch.equal(u.cpu(), torch.tensor([[2.0, 4.0], [3.0, 5.0]]))
    with pytest.raises(RuntimeError, match="devices must match"):
        torch.empty(0, device="zynq").set_(torch.arange(3.0).untyped_storage())


@pytest.mark.parametrize("fn", [
    lambda x: x + 1, lambda x: x.exp(), lambda x: torch.sort(x, dim=1), lambda x: x.t().contiguous(),
    lambda x: torch.nn.functional.softmax(x, 1), lambda x: x.clamp(0, 0.5), lambda x: x.cumsum(0),
    lambda x: torch.where(x > 0, x, -x), lambda x: x[x > 0], lambda x: x.to(torch.float64),
], ids=["add", "exp", "sort", "contiguous", "softmax", "clamp", "cumsum", "where", "mask", "to"])
def test_inputs_are_never_mutated_by_out_of_place_ops(fn) -> None:
    x = torch.randn(4, 5)
    z = x.to("zynq")
    before = z.cpu().clone()
    fn(z)
    assert torch.equal(z.cpu(), before)
    assert torch.equal(x, before)


def test_wrapped_numbers_promote_like_cpu() -> None:
    zi = torch.arange(4, dtype=torch.int32).to("zynq")
    for fn in (lambda t: t + 1.5, lambda t: t * 2, lambda t: 1 - t, lambda t: t / 2, lambda t: t // 2,
               lambda t: t > 1.5, lambda t: t ** 2):
        got, ref = fn(zi), fn(torch.arange(4, dtype=torch.int32))
        assert got.dtype == ref.dtype and torch.equal(got.cpu(), ref)
    zh = torch.ones(3, dtype=torch.float16).to("zynq")
    assert (zh * torch.tensor(2.0, dtype=torch.float64)).dtype == torch.float16
    xd = torch.arange(5, dtype=torch.float64) * 0.37
    for fn in (lambda t: t.remainder(0.1), lambda t: torch.fmod(t, 0.3), lambda t: 1 - t, lambda t: 3.0 * t):
        got, ref = fn(xd.to("zynq")), fn(xd)
        assert got.dtype == torch.float64 and torch.equal(got.cpu(), ref)
    i8 = torch.tensor([100, -100, 7], dtype=torch.int8)
    for fn in (lambda t: t * 3, lambda t: t.remainder(3), lambda t: 2 - t, lambda t: t.bitwise_and(0x0F)):
        got, ref = fn(i8.to("zynq")), fn(i8)
        assert got.dtype == ref.dtype and torch.equal(got.cpu(), ref)


def test_zero_dim_and_empty_tensors() -> None:
    s = torch.tensor(3.0).to("zynq")
    assert s.dim() == 0 and (s * 2).item() == 6.0
    e = torch.empty(0, 3, device="zynq")
    assert e.sum(0).shape == (3,) and torch.equal(e.sum(0).cpu(), torch.zeros(3))
    assert torch.cat([e, torch.ones(2, 3, device="zynq")]).shape == (2, 3)
    assert e.t().shape == (3, 0)


def test_host_buffers_must_be_flat_uint8() -> None:
    alloc = pynqtorch.device.get_allocator()
    with pytest.raises(ValueError, match="flat contiguous uint8 CPU tensor"):
        alloc.adopt(torch.zeros(4, dtype=torch.float32))
    with pytest.raises(ValueError, match="at offset 2"):
        alloc.adopt(torch.zeros(8, dtype=torch.uint8)[2:])


def test_allocator_accounts_each_adoption_until_the_buffer_dies() -> None:
    """The same buffer adopted twice is accounted twice and released twice (no tensor comparison on the way)."""
    alloc = pynqtorch.device.HostAllocator()
    buf = torch.zeros(64, dtype=torch.uint8)
    assert alloc.adopt(buf) is buf and alloc.adopt(buf) is buf
    assert (alloc.allocated, alloc.count, alloc.peak) == (128, 2, 128)
    del buf
    assert (alloc.allocated, alloc.count, alloc.peak) == (0, 0, 128)


def test_results_live_in_memory_of_a_copying_allocator() -> None:
    """An allocator refusing CPU buffers gets results copied into its own memory; the tensor reads that memory,
    not the CPU result it was copied from."""

    class Copying(pynqtorch.device.HostAllocator):
        def accepts(self, buf: torch.Tensor) -> bool:
            return False

    previous = pynqtorch.device.set_allocator(Copying())
    try:
        y = torch.arange(4.0).to("zynq") * 2
        host = pynqtorch.device.storage.host_buffer(y)
        assert host.data_ptr() == y.data_ptr()
        host.view(torch.float32)[0] = 42.0  # as a compute unit writes device memory
        assert torch.equal(y.cpu(), torch.tensor([42.0, 2.0, 4.0, 6.0]))
        assert torch.equal((y + 1).cpu(), torch.tensor([43.0, 3.0, 5.0, 7.0]))
    finally:
        pynqtorch.device.set_allocator(previous)


def test_tensors_beyond_zynq0_are_refused_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNQ_REMOTE_DEVICES", "10.0.0.2,10.0.0.3")
    with pytest.raises(RuntimeError, match="zynq tensors live on zynq:0"):
        torch.ones(2).to("zynq:1")
    with pytest.raises(RuntimeError, match="zynq:2 does not exist: 2 zynq device"):
        torch.empty(2, device="zynq:2")


def test_autocast_is_accepted_and_changes_nothing() -> None:
    x = torch.randn(3, 4)
    z = x.to("zynq")
    with torch.autocast("zynq", dtype=torch.bfloat16):
        y = (z * 2).relu()
    assert y.dtype == torch.float32 and torch.equal(y.cpu(), (x * 2).relu())


def test_sparse_results_are_refused_clearly() -> None:
    with pytest.raises(RuntimeError, match="zynq tensors are dense"):
        torch.ones(2, device="zynq").to_sparse()


# ---- strict mode and report ----------------------------------------------------------------------------------

def test_strict_mode_raises_naming_the_op() -> None:
    z = torch.ones(3, device="zynq")
    pynqtorch.strict(True)
    try:
        assert pynqtorch.strict() is True
        with pytest.raises(pynqtorch.StrictModeError, match=r"aten::exp has no zynq kernel"):
            z.exp()
        with pytest.raises(pynqtorch.StrictModeError, match=r"aten::add\.Tensor"):
            z + z
        # moving memory is not compute: allowed in strict mode
        y = torch.arange(3.0).to("zynq")
        assert torch.equal(y.cpu(), torch.arange(3.0))
        assert torch.equal(y.view(3, 1).cpu(), torch.arange(3.0).view(3, 1))
    finally:
        pynqtorch.strict(False)
    assert torch.equal(z.exp().cpu(), torch.ones(3).exp())


def test_strict_mode_from_environment() -> None:
    code = ("import torch, pynqtorch\n"
            "z = torch.ones(2, device='zynq')\n"
            "assert pynqtorch.strict()\n"
            "try:\n"
            "    torch.sigmoid(z)\n"
            "except pynqtorch.StrictModeError as e:\n"
            "    print('STRICT', e)\n")
    env = dict(os.environ, PYNQTORCH_STRICT="1")
    res = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "STRICT aten::sigmoid has no zynq kernel" in res.stdout


def test_report_counts_per_op() -> None:
    z = torch.randn(4, device="zynq")
    for _ in range(3):
        torch.sigmoid(z)
    z.exp_()
    calls = cpu_calls()
    assert calls["aten::sigmoid"] == 3
    assert calls["aten::exp_"] == 1
    rep = pynqtorch.report()
    assert rep.cpu["aten::sigmoid"].seconds > 0
    text = str(rep)
    assert "aten::sigmoid" in text and "cpu fallback" in text
    assert "engine" in rep.to_dict()
    pynqtorch.reset_report()
    assert cpu_calls() == {}


def test_profiler_trace_names_fallback_ops() -> None:
    z = torch.randn(8, device="zynq")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        torch.tanh(z)
    names = {e.key for e in prof.key_averages()}
    assert "zynq::cpu_fallback::aten::tanh" in names


def test_debug_env_logs_every_fallback_op() -> None:
    code = "import torch, pynqtorch\ntorch.cos(torch.ones(2, device='zynq'))\n"
    env = dict(os.environ, PYNQTORCH_DEBUG="1")
    res = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "zynq: aten::cos -> cpu fallback" in res.stderr


# ---- autograd: backward runs through the CPU fallback ------------------------------------------------------

def test_backward_elementwise_grads_match_cpu_exactly() -> None:
    torch.manual_seed(0)
    x, w, y = torch.randn(6, 5), torch.randn(5), torch.randn(6)
    wc = w.clone().requires_grad_()
    wz = w.to("zynq").requires_grad_()
    for wt, dev in ((wc, "cpu"), (wz, "zynq")):
        xs, ys = x.to(dev), y.to(dev)
        loss = ((torch.tanh(xs * wt).sum(-1) - ys) ** 2).mean()
        loss.backward()
    assert wz.grad.device == ZYNQ and wz.is_leaf
    assert torch.equal(wz.grad.cpu(), wc.grad)


def test_grad_accumulation_and_optimizer_step() -> None:
    torch.manual_seed(0)
    w = torch.randn(4, 3)
    wz = w.to("zynq").requires_grad_()
    x = torch.randn(2, 4).to("zynq")
    (x @ wz).relu().sum().backward()
    g1 = wz.grad.cpu().clone()
    (x @ wz).relu().sum().backward()
    assert torch.equal(wz.grad.cpu(), 2 * g1)
    wc = w.clone().requires_grad_()
    wc.grad = wz.grad.cpu().clone()
    opt_z = torch.optim.SGD([wz], lr=0.1, momentum=0.9, weight_decay=0.01)
    opt_c = torch.optim.SGD([wc], lr=0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(2):
        opt_z.step()
        opt_c.step()
    assert wz.device == ZYNQ and torch.equal(wz.detach().cpu(), wc.detach())
    opt_z.zero_grad()
    assert wz.grad is None


def test_mlp_backward_matches_cpu() -> None:
    """Linear layers run quantized on the engine, so gradients match CPU to quantization accuracy."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    ref = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    ref.load_state_dict(net.state_dict())
    net.to("zynq")
    x, target = torch.randn(10, 8), torch.randint(0, 3, (10,))
    torch.nn.functional.cross_entropy(net(x.to("zynq")), target.to("zynq")).backward()
    torch.nn.functional.cross_entropy(ref(x), target).backward()
    for p, q in zip(net.parameters(), ref.parameters()):
        assert p.grad.device == ZYNQ
        torch.testing.assert_close(p.grad.cpu(), q.grad, atol=0.02, rtol=0.1)
    torch.optim.Adam(net.parameters(), lr=1e-2).step()
    assert all(p.device == ZYNQ for p in net.parameters())


def test_requires_grad_tensor_round_trip() -> None:
    x = torch.randn(3, requires_grad=True)
    z = x.to("zynq")
    assert z.requires_grad and z.grad_fn is not None
    z.sum().backward()
    assert x.grad.device.type == "cpu" and torch.equal(x.grad, torch.ones(3))


def test_overhead_benchmark_runs_and_prints_figures() -> None:
    cmd = [sys.executable, "-m", "pynqtorch.bench.fallback", "--batch", "3", "--repeats", "2", "--json"]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    figures = json.loads(res.stdout)
    assert {"add", "add_ (in-place)", "view", "empty"} <= set(figures)
    for row in figures.values():
        assert row["cpu_us"] > 0 and row["zynq_us"] > 0
        assert row["added_us"] == pytest.approx(row["zynq_us"] - row["cpu_us"])


# ---- fused RNN cells (PyTorch calls them for every non-CPU device, ships them for CUDA only) ------------

def _lstm_reference(ig, hg, cx, b1, b2):
    i, f, g, o = (ig + hg + b1 + b2).chunk(4, 1)
    cy = f.sigmoid() * cx + i.sigmoid() * g.tanh()
    return o.sigmoid() * cy.tanh(), cy


def _gru_reference(ig, hg, hx, b1, b2):
    ir, ii, in_ = (ig + b1).chunk(3, 1)
    hr, hi, hn = (hg + b2).chunk(3, 1)
    r, z = (ir + hr).sigmoid(), (ii + hi).sigmoid()
    n = (in_ + r * hn).tanh()
    return (1 - z) * n + z * hx


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fused_rnn_cells_match_the_cell_equations_and_their_gradients(cell: str) -> None:
    torch.manual_seed(0)
    gates, hidden = (4, 3) if cell == "lstm" else (3, 3)
    shapes = [(2, gates * hidden), (2, gates * hidden), (2, hidden), (gates * hidden,), (gates * hidden,)]
    leaves = [torch.randn(s, dtype=torch.float64) for s in shapes]
    cpu = [t.clone().requires_grad_() for t in leaves]
    dev = [t.to("zynq").requires_grad_() for t in leaves]
    if cell == "lstm":
        hy, cy = _lstm_reference(*cpu)
        hz, cz, _ = torch.ops.aten._thnn_fused_lstm_cell(*dev)
        (hy.sum() + (cy * cy).sum()).backward()
        (hz.sum() + (cz * cz).sum()).backward()
        torch.testing.assert_close(cz.detach().cpu(), cy.detach())
    else:
        hy = _gru_reference(*cpu)
        hz, _ = torch.ops.aten._thnn_fused_gru_cell(*dev)
        (hy * hy).sum().backward()
        (hz * hz).sum().backward()
    torch.testing.assert_close(hz.detach().cpu(), hy.detach())
    for c, d in zip(cpu, dev):
        assert d.grad.device == ZYNQ
        torch.testing.assert_close(d.grad.cpu(), c.grad)
    assert f"aten::_thnn_fused_{cell}_cell" in cpu_calls()
    if cell == "lstm":  # a loss on the cell state alone: no gradient flows into hy
        for t in cpu + dev:
            t.grad = None
        _lstm_reference(*cpu)[1].sum().backward()
        torch.ops.aten._thnn_fused_lstm_cell(*dev)[1].sum().backward()
        for c, d in zip(cpu, dev):
            torch.testing.assert_close(d.grad.cpu(), c.grad)


@pytest.mark.parametrize("cls", [torch.nn.LSTM, torch.nn.GRU], ids=["LSTM", "GRU"])
def test_recurrent_modules_run_and_train_on_zynq(cls) -> None:
    """Gate GEMMs run quantized on the engine: outputs and gradients match CPU to that accuracy."""
    torch.manual_seed(0)
    ref = cls(4, 6, num_layers=2, batch_first=True)
    net = cls(4, 6, num_layers=2, batch_first=True)
    net.load_state_dict(ref.state_dict())
    net.to("zynq")
    x = torch.randn(3, 5, 4)
    out, _ = net(x.to("zynq"))
    ref_out, _ = ref(x)
    torch.testing.assert_close(out.cpu(), ref_out, atol=0.02, rtol=0.05)
    out.pow(2).sum().backward()
    ref_out.pow(2).sum().backward()
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad.cpu(), q.grad, atol=0.1, rtol=0.1)
