"""torch.compile on zynq: the `pynqtorch` backend agrees with eager with GEMMs on the kernel; the default fails clearly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pynqtorch
from pynqtorch.device.compiler import DEFAULT_BACKEND_ERROR, is_gemm_node, split
from pynqtorch.device.compiler import pynqtorch as backend
from pynqtorch.examples.digits import DigitsCNN


class Block(nn.Module):
    """A pre-norm transformer block: attention written out (matmuls, softmax) and a GELU MLP."""

    def __init__(self, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.softmax(q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


MODELS = {
    "mlp": (_mlp, (16, 20), True),
    "digits_cnn": (DigitsCNN, (8, 1, 8, 8), True),
    "transformer_block": (Block, (2, 12, 32), False),
}


def _accelerated() -> dict[str, int]:
    return {k: v.calls for k, v in pynqtorch.report().accelerated.items()}


def _kernel_calls() -> int:
    return sum(u["calls"] for u in pynqtorch.report().engine.get("units", {}).values())


@pytest.mark.parametrize("name", MODELS)
def test_compiled_agrees_with_eager_and_runs_gemms_on_the_kernel(name: str) -> None:
    make, shape, exact = MODELS[name]
    torch.manual_seed(0)
    model = make().eval().to("zynq")
    x = torch.randn(shape)
    compiled = torch.compile(model, backend=backend)
    with torch.no_grad():
        pynqtorch.reset_report()
        eager = model(x.to("zynq")).cpu()
        eager_ops, eager_kernel = _accelerated(), _kernel_calls()
        pynqtorch.reset_report()
        got = compiled(x.to("zynq"))
        assert got.device.type == "zynq"
        got = got.cpu()
        compiled_ops, compiled_kernel = _accelerated(), _kernel_calls()
        want = make().eval()
        want.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
        cpu = want(x)
    # the same GEMMs, each on the kernel: in one inductor graph, as calls of the lowered ops
    assert eager_ops and sum(compiled_ops.values()) == sum(eager_ops.values())
    assert set(compiled_ops) <= {"pynqtorch::gemm", "pynqtorch::convolution"}
    assert compiled_kernel == eager_kernel > 0
    if exact:  # between GEMMs only exact ops (ReLU, max-pool): the same bits
        assert torch.equal(got, eager)
    else:  # LayerNorm/softmax/GELU compiled by inductor may differ from eager in the last bits
        assert ((got - eager).norm() / eager.norm()).item() < 1e-3
    assert ((got - cpu).norm() / cpu.norm()).item() < 0.05  # the int8 scheme vs float32


def test_changing_shapes_recompile_correctly() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4), nn.Softmax(-1)).eval().to("zynq")
    compiled = torch.compile(model, backend=backend)
    with torch.no_grad():
        for batch in (8, 5, 3, 7):  # the second shape makes dynamo compile a graph with a symbolic batch
            x = torch.randn(batch, 8).to("zynq")
            got, want = compiled(x).cpu(), model(x).cpu()
            assert got.shape == (batch, 4)
            assert ((got - want).norm() / want.norm()).item() < 1e-5


def test_results_that_view_an_input_alias_it() -> None:
    fn = torch.compile(lambda x, w: ((x @ w).t(), x.view(-1)), backend=backend)
    x, w = torch.randn(4, 8).to("zynq"), torch.randn(8, 3).to("zynq")
    with torch.no_grad():
        prod, flat = fn(x, w)
    assert prod.shape == (3, 4) and prod.stride() == (1, 3)
    assert flat.untyped_storage()._cdata == x.untyped_storage()._cdata
    x.add_(1.0)
    assert torch.equal(flat.cpu(), x.cpu().view(-1))


def test_compiled_gradients_match_eager() -> None:
    torch.manual_seed(1)
    model = _mlp().to("zynq")
    x, y = torch.randn(16, 20).to("zynq"), torch.randint(0, 10, (16,)).to("zynq")
    compiled = torch.compile(model, backend=backend)
    grads = []
    for fn in (model, compiled):
        model.zero_grad()
        F.cross_entropy(fn(x), y).backward()
        grads.append([p.grad.cpu().clone() for p in model.parameters()])
    for g_eager, g_compiled in zip(*grads):
        assert torch.equal(g_eager, g_compiled)


class _Accumulate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.w
        self.w.add_(1.0)
        return y


def test_writes_in_a_compiled_run_invalidate_cached_weights() -> None:
    torch.manual_seed(2)
    x = torch.randn(3, 8)
    eager, model = _Accumulate().to("zynq"), _Accumulate().to("zynq")
    model.load_state_dict(eager.state_dict())
    compiled = torch.compile(model, backend=backend)
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(compiled(x.to("zynq")).cpu(), eager(x.to("zynq")).cpu())
    assert torch.equal(model.w.cpu(), eager.w.cpu())


def _two_layers(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    return F.linear(torch.relu(x @ w1).mul(2), w2).softmax(-1)


@pytest.mark.parametrize("fn", [_two_layers, _mlp()], ids=["functions", "modules"])
def test_graph_is_split_into_gemm_and_host_runs(fn) -> None:
    parts = split(torch.fx.symbolic_trace(fn))
    subs = [m for n, m in parts.named_children() if n.startswith("submod_")]
    kinds = [isinstance(m, torch.fx.GraphModule) and any(is_gemm_node(n) for n in m.graph.nodes) for m in subs]
    assert kinds == ([True, False, True, False] if fn is _two_layers else [True, False, True, False, True])


def test_default_backend_fails_naming_the_pynqtorch_backend() -> None:
    model = _mlp().to("zynq")
    torch._dynamo.reset()
    with pytest.raises(Exception, match="backend='pynqtorch'") as e:
        torch.compile(model)(torch.randn(2, 20).to("zynq"))
    assert DEFAULT_BACKEND_ERROR in str(e.value)
    # CPU models keep compiling with the default backend
    cpu = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    assert torch.allclose(torch.compile(cpu)(x), cpu(x))


def _counters() -> dict[str, int]:
    return pynqtorch.report().engine.get("counters", {})


def test_whole_graph_is_one_inductor_graph_with_weights_cached_on_the_zynq_parameters() -> None:
    """GEMMs lowered into the compiled graph: one compiled run per forward, no split, no CPU fallback, every
    weight's quantization reused from the zynq parameter's cache on the next forward."""
    from pynqtorch.device.compiler import STATS

    torch.manual_seed(4)
    model = _mlp().eval().to("zynq")
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(16, 20).to("zynq")
    STATS.reset()
    with torch.no_grad():
        compiled(x)
        pynqtorch.reset_report()
        compiled(x)
    assert (STATS.graphs, STATS.lowered, STATS.gemm_runs, STATS.host_runs, STATS.eager_runs) == (1, 1, 0, 0, 0)
    assert STATS.graph_calls == 2 and STATS.host_calls == 2
    rep = pynqtorch.report()
    assert {k: v.calls for k, v in rep.accelerated.items()} == {"pynqtorch::gemm": 3}
    assert not rep.cpu  # the ReLUs are inside the compiled graph, not CPU-fallback ops
    assert _counters()["weight_cache_hits"] == _counters()["kernel_calls"] == 3


def test_a_weight_written_between_compiled_calls_is_quantized_again() -> None:
    torch.manual_seed(5)
    model = nn.Linear(8, 4).eval().to("zynq")
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(3, 8).to("zynq")
    with torch.no_grad():
        compiled(x)
        model.weight.mul_(-2.0)
        got = compiled(x).cpu()
        want = model(x).cpu()
    assert torch.equal(got, want)


class _Positions(nn.Module):
    """Creates a tensor on the input's device inside the graph (as GPT-2 and T5 do for positions and masks)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.proj = nn.Embedding(16, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(x.shape[1], device=x.device)
        return self.proj(x + self.emb(pos)).softmax(-1)


def test_tensors_created_on_zynq_inside_the_graph_keep_it_one_compiled_graph() -> None:
    from pynqtorch.device.compiler import STATS

    torch.manual_seed(6)
    model = _Positions().eval().to("zynq")
    x = torch.randn(2, 5, 8).to("zynq")
    STATS.reset()
    with torch.no_grad():
        got = torch.compile(model, backend=backend)(x)
        want = model(x).cpu()
    assert got.device.type == "zynq" and STATS.lowered == 1 and STATS.eager_runs == 0
    assert ((got.cpu() - want).norm() / want.norm()).item() < 1e-5


def _vdot_twice(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.vdot(a, b) * 2


def test_an_unlowered_gemm_op_splits_the_graph_instead_of_running_on_cpu() -> None:
    """`vdot` has no lowering (and inductor's own decomposition of family ops is dropped): the graph is refused
    before code generation and split, and vdot runs on zynq, on the kernel, never inside inductor."""
    from pynqtorch.device.compiler import STATS

    torch.manual_seed(7)
    a, b = torch.randn(64).to("zynq"), torch.randn(64).to("zynq")
    STATS.reset()
    with torch.no_grad():
        pynqtorch.reset_report()
        got = torch.compile(_vdot_twice, backend=backend)(a, b).cpu()
        kernel = _counters()["kernel_calls"]
        want = _vdot_twice(a, b).cpu()
    assert STATS.lowered == 0 and STATS.gemm_runs == 1 and STATS.host_runs == 1 and kernel > 0
    assert torch.equal(got, want)


def test_fused_encoder_layer_is_lowered_into_the_compiled_graph() -> None:
    """`nn.TransformerEncoderLayer`'s fused fast path is lowered through its composite form: one graph, the same
    kernel work as eager (where the same math runs on zynq)."""
    from pynqtorch.device.compiler import STATS

    torch.manual_seed(8)
    model = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).eval().to("zynq")
    x = torch.randn(2, 6, 16).to("zynq")
    STATS.reset()
    compiled = torch.compile(model, backend=backend)
    with torch.no_grad():
        compiled(x)
        pynqtorch.reset_report()
        got = compiled(x).cpu()
        kernel = _counters()["kernel_calls"]
        pynqtorch.reset_report()
        want = model(x).cpu()
        assert kernel == _counters()["kernel_calls"] > 0
    assert STATS.lowered == 1 and STATS.gemm_runs == 0
    assert ((got - want).norm() / want.norm()).item() < 1e-4


class _Recurrent(nn.Module):
    def __init__(self, kind: type[nn.RNNBase], **kw: object) -> None:
        super().__init__()
        self.rnn = kind(6, 8, **kw)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, h = self.rnn(x)
        return (out, *h) if isinstance(h, tuple) else (out, h)


RECURRENT = [(nn.LSTM, {"num_layers": 2, "bidirectional": True}), (nn.GRU, {"num_layers": 2, "batch_first": True}),
             (nn.LSTM, {"batch_first": True, "bias": False})]


@pytest.mark.parametrize(("kind", "kw"), RECURRENT, ids=["lstm-bi", "gru-batch-first", "lstm-nobias"])
def test_compiled_recurrent_layers_run_the_layer_stack_on_the_kernel(kind: type[nn.RNNBase], kw: dict) -> None:
    """With dynamo's `allow_rnn`, `torch.lstm`/`torch.gru` become one `pynqtorch::` op in the lowered graph (never
    PyTorch's CPU decomposition): eager zynq's result bit for bit, with the same kernel work, weights cached."""
    from pynqtorch.device.compiler import STATS

    torch.manual_seed(9)
    model = _Recurrent(kind, **kw).eval().to("zynq")
    x = torch.randn(5, 3, 6).to("zynq")
    STATS.reset()
    with torch.no_grad(), torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(model, backend=backend)
        compiled(x)
        pynqtorch.reset_report()
        got = [t.cpu() for t in compiled(x)]
        rep, counters = pynqtorch.report(), _counters()
        pynqtorch.reset_report()
        want = [t.cpu() for t in model(x)]
        assert counters["kernel_calls"] == _counters()["kernel_calls"] > 0
    assert (STATS.graphs, STATS.lowered, STATS.gemm_runs, STATS.eager_runs) == (1, 1, 0, 0)
    name = f"pynqtorch::{kind.__name__.lower()}"
    assert {k: v.calls for k, v in rep.accelerated.items()} == {name: 1}
    assert counters["weight_cache_hits"] > 0
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_a_recurrent_call_left_to_pytorch_is_not_computed_on_cpu_inside_the_graph() -> None:
    """A `torch.lstm` call the backend does not rewrite (a keyword argument) would be decomposed by PyTorch into a
    float CPU layer inside inductor's code: the graph is refused and split, the layer runs on zynq, on the kernel."""
    from pynqtorch.device.compiler import STATS

    torch.manual_seed(10)
    lstm = nn.LSTM(4, 5).eval().to("zynq")

    def fn(seq: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.lstm(seq, (h, h), list(lstm._flat_weights), True, 1, 0.0, False, False, batch_first=False)[0]

    x, h = torch.randn(6, 2, 4).to("zynq"), torch.zeros(1, 2, 5).to("zynq")
    STATS.reset()
    with torch.no_grad(), torch._dynamo.config.patch(allow_rnn=True):
        pynqtorch.reset_report()
        got = torch.compile(fn, backend=backend)(x, h).cpu()
        accelerated = set(pynqtorch.report().accelerated)
        want = fn(x, h).cpu()
    assert STATS.lowered == 0 and STATS.gemm_runs == 1 and accelerated == {"aten::lstm.input"}
    assert torch.equal(got, want)
