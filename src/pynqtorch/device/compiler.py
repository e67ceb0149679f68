"""`torch.compile(model, backend="pynqtorch")`: GEMM-family nodes run on the kernel, the rest is compiled for CPU.

Dynamo hands the backend an FX graph of the model. First the whole graph is compiled by inductor for CPU, with
its GEMM-family aten ops lowered (`_lowerings`) to the ops `pynqtorch.lowering` defines: `pynqtorch::gemm`
and `pynqtorch::convolution` call the engine on CPU views, so one compiled graph covers the model and the
GEMMs still run on the kernel, with weights cached on the zynq tensors they view (`owner_of`). The graph
receives zero-copy CPU views of its zynq inputs; its results become zynq tensors without copies (views of
an input stay views of it). A GEMM-family op left unlowered (one without a lowering, e.g. `vdot`) makes that
compilation fail rather than run on CPU.

Graphs that cannot be compiled that way are split, in program order, into runs of GEMM-family nodes (matmul,
linear, convolution, attention, ...) and runs of everything else. GEMM runs stay calls on the zynq tensors,
so they reach the active target's kernel with quantized-weight caching intact. The other runs are compiled by
inductor for CPU on CPU views likewise. Graphs and runs are compiled per input geometry on first use. Graphs
and runs that need autograd, and runs inductor cannot compile, run eagerly on the zynq tensors; `STATS` counts
them, with the graphs, runs and time of compiled runs, so a benchmark can tell a compiled model from one
that silently ran eagerly.

The device's own Python (kernels, engine, targets) is put on dynamo's skip list (`skip_runtime`) when the
backend is looked up by name (`device/backend.py`, the entry point) or first called: where dynamo runs a
model's code eagerly after a graph break (an LSTM/GRU module, say), the kernels that code reaches through the
dispatcher would otherwise be traced and compiled as user code, frame by frame. (This module itself stays
cheap to import: the device module imports it for the codegen stand-ins.)

PyTorch's default backend (inductor on the whole graph) cannot generate code for zynq tensors, whose data
PyTorch does not see as a pointer; `refusing_codegen` makes it fail with an error that names this backend.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.fx

from .storage import adopt_result, alias, cpu_view, is_zynq, mark_written

log = logging.getLogger(__name__)

# Names of the torch functions, Tensor methods and aten ops whose nodes run on zynq (they lower to the kernel).
GEMM_NAMES = frozenset({
    "linear", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm", "baddbmm", "addbmm", "addmv", "mv",
    "dot", "vdot", "addr", "einsum", "tensordot", "inner", "bilinear", "chain_matmul", "multi_dot", "conv1d", "conv2d",
    "convolution", "_convolution", "scaled_dot_product_attention", "multi_head_attention_forward",
    "_native_multi_head_attention", "_transformer_encoder_layer_fwd", "_addmm_activation", "lstm", "gru",
    "mkldnn_rnn_layer",  # what PyTorch's own decomposition makes of a CPU `lstm` (in a lowered graph: refused)
})
GEMM_MODULES = (torch.nn.Linear, torch.nn.Bilinear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.MultiheadAttention,
                torch.nn.TransformerEncoderLayer, torch.nn.TransformerDecoderLayer)

NAME = "pynqtorch"
# pynqtorch packages that run under the device (never user model code): dynamo must not trace them.
RUNTIME_PACKAGES = ("device", "ops", "engine", "targets", "hostops", "hw", "buildcache", "reporting", "lowering")


_skipped: list[str] = []


def skip_runtime() -> None:
    """Put `RUNTIME_PACKAGES` on dynamo's skip list (once)."""
    if _skipped:
        return
    import torch._dynamo.trace_rules as rules

    for pkg in RUNTIME_PACKAGES:
        _skipped.append(f"{__package__.rpartition('.')[0]}.{pkg}")
        rules.add(_skipped[-1])


@dataclass
class CompileStats:
    """What the backend did since `reset()`: graphs it was given, compilations of whole graphs with lowered
    GEMMs, GEMM and inductor runs of split graphs, runs inductor refused (they run eagerly on zynq), calls of
    compiled graphs and of inductor runs (whole or split), time in split runs (`host_s`) and in whole lowered
    graphs (`lowered_s`, which includes their GEMM ops)."""

    graphs: int = 0
    lowered: int = 0
    gemm_runs: int = 0
    host_runs: int = 0
    eager_runs: int = 0
    graph_calls: int = 0
    host_calls: int = 0
    host_s: float = 0.0
    lowered_s: float = 0.0

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, f.default)


STATS = CompileStats()
DEFAULT_BACKEND_ERROR = (
    "torch.compile's default backend (inductor) cannot generate code for zynq tensors (their data lives in "
    f"host buffers PyTorch does not see as pointers); use torch.compile(model, backend={NAME!r})")


def is_gemm_node(node: torch.fx.Node) -> bool:
    """True for a call of a GEMM-family function, method, op or module."""
    if node.op == "call_module":
        return isinstance(node.graph.owning_module.get_submodule(node.target), GEMM_MODULES)
    if node.op == "call_method":
        return node.target in GEMM_NAMES
    if node.op != "call_function":
        return False
    target = node.target
    name = getattr(target, "__name__", "")
    if isinstance(target, torch._ops.OpOverload):
        name = target._schema.name.split("::")[-1]
    return name in GEMM_NAMES


def _is_aten_gemm(node: torch.fx.Node) -> bool:
    """An aten GEMM-family op (attention kernels included) in a graph after AOT tracing."""
    return (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
            and node.target.namespace == "aten"
            and (is_gemm_node(node) or "scaled_dot_product" in node.target._schema.name))


def _lowerings() -> dict[torch._ops.OpOverload, Callable[..., Any]]:
    """Decompositions of GEMM-family aten ops into `pynqtorch::gemm` / `pynqtorch::convolution` calls (the ops
    of `pynqtorch.lowering`, registered on `import pynqtorch`); attention into batched products; the fused
    encoder layer into its composite form there."""
    from torch._decomp import decomposition_table

    aten, ops = torch.ops.aten, torch.ops.pynqtorch

    def scale_add(acc: torch.Tensor, bias: torch.Tensor, beta: complex, alpha: complex) -> torch.Tensor:
        acc = acc if alpha == 1 else acc * alpha
        return acc if beta == 0 else acc + (bias if beta == 1 else bias * beta)

    def addmm(bias, a, b, *, beta=1, alpha=1):
        return scale_add(ops.gemm(a, b), bias, beta, alpha)

    def addbmm(bias, a, b, *, beta=1, alpha=1):
        n, m, k = a.shape
        acc = ops.gemm(a.permute(1, 0, 2).reshape(m, n * k), b.reshape(n * k, b.shape[2]))
        return scale_add(acc, bias, beta, alpha)

    def mv(a, v):  # y = A v == (v^T A^T)^T: the matrix is the cached B operand, as in eager
        return ops.gemm(v.unsqueeze(0), a.t()).squeeze(0)

    def addmm_activation(bias, a, b, *, beta=1, alpha=1, use_gelu=False):
        out = addmm(bias, a, b, beta=beta, alpha=alpha)
        return torch.nn.functional.gelu(out, approximate="tanh") if use_gelu else out.relu()

    return {
        aten.mm.default: ops.gemm, aten.bmm.default: ops.gemm, aten.addmm.default: addmm,
        aten.baddbmm.default: addmm, aten.addbmm.default: addbmm, aten.mv.default: mv,
        aten.addmv.default: lambda bias, a, v, *, beta=1, alpha=1: scale_add(mv(a, v), bias, beta, alpha),
        aten.dot.default: lambda a, b: ops.gemm(a.unsqueeze(0), b.unsqueeze(1)).reshape(()),
        aten.addr.default: lambda bias, u, v, *, beta=1, alpha=1: scale_add(
            ops.gemm(u.unsqueeze(1), v.unsqueeze(0)), bias, beta, alpha),
        aten._addmm_activation.default: addmm_activation,
        aten.convolution.default: ops.convolution,
        aten._scaled_dot_product_flash_attention_for_cpu.default:
            decomposition_table[aten._scaled_dot_product_flash_attention_for_cpu.default],
        aten._transformer_encoder_layer_fwd.default: ops._transformer_encoder_layer_fwd,
    }


# Ops whose values the GEMM kernels compute: inductor's own decompositions of them (small products as pointwise
# code) are dropped, so an overload without a lowering stays in the graph and is refused by `_checked_inner`.
FAMILY = frozenset({"mm", "addmm", "bmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "vdot", "addr",
                    "_addmm_activation", "convolution"})


def _decompositions() -> dict[torch._ops.OpOverload, Callable[..., Any]]:
    """Inductor's decompositions without those of `FAMILY` ops, plus `_lowerings()`."""
    from torch._inductor.decomposition import select_decomp_table

    keep = {op: fn for op, fn in select_decomp_table().items()
            if not (isinstance(op, torch._ops.OpOverload) and op._schema.name.split("::")[-1] in FAMILY)}
    return {**keep, **_lowerings()}


class NotLowered(RuntimeError):
    """A graph still holds GEMM-family ops after lowering (they would run on CPU): it is compiled split."""


def _checked_inner(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], **kwargs: Any) -> Any:
    """Inductor's inner compilation, refusing graphs in which a GEMM-family aten op survived the lowering."""
    from torch._inductor.compile_fx import compile_fx_inner

    left = sorted({n.target._schema.name for n in gm.graph.nodes if _is_aten_gemm(n)})
    if left:
        raise NotLowered(f"GEMM-family ops without a lowering: {', '.join(left)}")
    return compile_fx_inner(gm, example_inputs, **kwargs)


_local = threading.local()


def owner_of(t: torch.Tensor | None) -> torch.Tensor | None:
    """The zynq input of the running lowered graph whose memory CPU tensor `t` views (None if none)."""
    owners = getattr(_local, "owners", None)
    if t is None or not owners:
        return None
    hit = owners.get(t.untyped_storage().data_ptr())
    return None if hit is None else hit[0]


class _HostRun:
    """A graph (with `lower`: GEMMs lowered to `pynqtorch::` ops) or a run of non-GEMM nodes, inductor-compiled
    for CPU views of its inputs, per input geometry; what inductor refuses runs `fallback` (default: the graph
    eagerly on zynq)."""

    def __init__(self, gm: torch.fx.GraphModule, lower: bool = False,
                 fallback: Callable[..., Any] | None = None) -> None:
        self.lower = lower
        self.fallback = fallback
        # inductor wants a graph returning a tuple: a single result is returned as a 1-tuple and unwrapped
        out = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
        self.single = not isinstance(out.args[0], (tuple, list))
        if self.single:
            out.args = ((out.args[0],),)
            gm.recompile()
        _on_host(gm)
        if lower:
            _recurrent_ops(gm)
        self.gm = gm
        self.compiled: dict[tuple, Callable[..., Any] | None] = {}

    def __call__(self, *args: Any) -> Any:
        out = self._run(args)
        return out[0] if self.single else out

    def _run(self, args: tuple) -> Any:
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return self.gm(*args)  # autograd runs through the zynq tensors
        # one pass: CPU views, the geometry key, and the zynq inputs by memory address (with their views'
        # versions, to see writes)
        views, key, zynq = [], [], {}
        for a in args:
            if isinstance(a, torch.Tensor):
                if a.device.type == "zynq":
                    v = cpu_view(a)
                    zynq[v.untyped_storage().data_ptr()] = (a, v, v._version)
                    a = v
                key.append((a.shape, a.stride(), a.dtype, a.storage_offset()))
            else:
                key.append(a)
            views.append(a)
        key = tuple(key)
        fn = self.compiled.get(key, self)
        if fn is self:
            fn = self.compiled[key] = self._compile(views)
        if fn is None:
            return self.fallback(*args) if self.fallback is not None else self.gm(*args)
        t0 = time.perf_counter()
        if self.lower:
            saved = getattr(_local, "owners", None)
            _local.owners = zynq
            try:
                out = fn(*views)
            finally:
                _local.owners = saved
        else:
            out = fn(*views)
        for a, v, before in zynq.values():
            if v._version != before:
                mark_written(a)
        out = _to_zynq(out, zynq)
        STATS.host_calls += 1
        if self.lower:
            STATS.lowered_s += time.perf_counter() - t0
        else:
            STATS.host_s += time.perf_counter() - t0
        return out

    def _compile(self, views: list[Any]) -> Callable[..., Any] | None:
        from torch._inductor.compile_fx import compile_fx

        try:
            if self.lower:
                fn = compile_fx(self.gm, views, inner_compile=_checked_inner, decompositions=_decompositions())
            else:
                fn = compile_fx(self.gm, views)
        except Exception as e:  # noqa: BLE001 -- any inductor failure: the fallback runs instead
            log.debug("inductor cannot compile %s (%s: %s); %s", "the lowered graph" if self.lower else "a CPU run",
                      type(e).__name__, e, "it is split" if self.lower else "it runs eagerly on zynq")
            if not self.lower:
                STATS.eager_runs += 1
            return None
        if self.lower:
            STATS.lowered += 1
        else:
            STATS.host_runs += 1
        return fn


def _host_device(v: Any) -> Any:
    if isinstance(v, torch.device) and v.type == "zynq":
        return torch.device("cpu")
    if isinstance(v, str) and v.split(":")[0] == "zynq":
        return "cpu"
    return v


def _on_host(gm: torch.fx.GraphModule) -> None:
    """Tensors the graph creates on zynq (``torch.arange(n, device=x.device)``, ``.to(x.device)``) are created in
    CPU memory instead: the compiled graph works on CPU views, and its fresh results become zynq tensors."""
    changed = False
    for node in gm.graph.nodes:
        if node.op in ("call_function", "call_method"):
            args = torch.fx.node.map_aggregate(node.args, _host_device)
            kwargs = torch.fx.node.map_aggregate(node.kwargs, _host_device)
            if args != node.args or kwargs != node.kwargs:
                node.args, node.kwargs, changed = args, kwargs, True
    if changed:
        gm.recompile()


def _recurrent_ops(gm: torch.fx.GraphModule) -> None:
    """``torch.lstm`` / ``torch.gru`` calls on a padded sequence become `pynqtorch::lstm` / `pynqtorch::gru` (the
    layer stack as eager zynq runs it): PyTorch decomposes them before any decomposition table is consulted."""
    ops = {torch.lstm: torch.ops.pynqtorch.lstm.default, torch.gru: torch.ops.pynqtorch.gru.default}
    changed = False
    for node in gm.graph.nodes:
        # the `.input` overloads: (input, hx, params: list, ...), never `.data` (input, batch_sizes, hx, ...)
        if node.op == "call_function" and node.target in ops and len(node.args) == 9 and not node.kwargs \
                and isinstance(node.args[2], (list, tuple)):
            node.target, changed = ops[node.target], True
    if changed:
        gm.recompile()


def _to_zynq(out: Any, inputs: dict[int, tuple[torch.Tensor, ...]]) -> Any:
    """Results of a CPU run as zynq tensors: views of a zynq input's memory (`inputs`: memory address -> the
    input first) alias it, fresh memory is adopted (once: results sharing it alias the first)."""
    made: dict[int, torch.Tensor] = {}

    def one(r: Any) -> Any:
        if not isinstance(r, torch.Tensor) or r.device.type != "cpu":
            return r
        ptr = r.untyped_storage().data_ptr()
        base = inputs[ptr][0] if ptr and ptr in inputs else made.get(ptr) if ptr else None
        if base is not None:
            return alias(base, r)
        z = adopt_result(r)
        if ptr:
            made[ptr] = z
        return z

    if isinstance(out, (list, tuple)):
        return type(out)(one(r) for r in out)
    return one(out)


def split(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """`gm` split into submodules `submod_<i>` alternating GEMM runs and other runs, in program order."""
    from torch.fx.passes.split_module import split_module

    part, kind = 0, None
    parts: dict[torch.fx.Node, int] = {}
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        k = is_gemm_node(node)
        if kind is not None and k != kind:
            part += 1
        kind = k
        parts[node] = part
    gemm_parts = {parts[n] for n in parts if is_gemm_node(n)}
    STATS.gemm_runs += len(gemm_parts)
    out = split_module(gm, gm, lambda n: parts[n], keep_original_order=True)
    for name, sub in out.named_children():
        if name.startswith("submod_") and int(name.removeprefix("submod_")) not in gemm_parts:
            setattr(out, name, _HostModule(sub))
    return out


class _HostModule(torch.nn.Module):
    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__()
        self.run = _HostRun(gm)

    def forward(self, *args: Any) -> Any:
        return self.run(*args)


def _lazy_split(gm: torch.fx.GraphModule) -> Callable[..., Any]:
    """`split(gm).forward`, split on first use, of a copy of the graph taken now (inductor may change `gm`)."""
    import copy

    graph = torch.fx.GraphModule(gm, copy.deepcopy(gm.graph))
    parts: list[torch.fx.GraphModule] = []

    def run(*args: Any) -> Any:
        if not parts:
            parts.append(split(graph))
        return parts[0](*args)

    return run


def pynqtorch(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
    """The `torch.compile` backend: GEMM-family nodes on the kernel, other runs compiled by inductor for CPU."""
    skip_runtime()
    STATS.graphs += 1
    if not any(is_zynq(x) for x in example_inputs) and not any(
            is_zynq(v) for v in (*gm.parameters(), *gm.buffers())):
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(gm, example_inputs)  # nothing on zynq: plain inductor
    if any(is_gemm_node(n) for n in gm.graph.nodes):
        run = _HostRun(gm, lower=True, fallback=_lazy_split(gm))
    else:
        run = _HostRun(gm)

    def counted(*args: Any) -> Any:
        STATS.graph_calls += 1
        return run(*args)

    return counted


CODEGEN_BASES = {
    "Scheduling": ("torch._inductor.codegen.cpp", "CppScheduling"),
    "PythonWrapperCodegen": ("torch._inductor.codegen.wrapper", "PythonWrapperCodegen"),
    "CppWrapperCodegen": ("torch._inductor.codegen.cpp_wrapper_cpu", "CppWrapperCpu"),
    "WrapperFxCodegen": ("torch._inductor.codegen.wrapper_fxir", "WrapperFxCodegen"),
}


def refusing_codegen(name: str) -> type:
    """Inductor's codegen class `name` for zynq: creating one raises `DEFAULT_BACKEND_ERROR`.

    Inductor asks the device module for its codegen classes (and needs device op overrides for it), so a
    graph on zynq reaches these and fails with a message naming the backend that works.
    """
    import importlib

    from torch._inductor.codegen.common import register_device_op_overrides
    from torch._inductor.codegen.cpu_device_op_overrides import CpuDeviceOpOverrides

    register_device_op_overrides("zynq", CpuDeviceOpOverrides())
    module, base = CODEGEN_BASES[name]

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(DEFAULT_BACKEND_ERROR)

    return type(f"Zynq{name}", (getattr(importlib.import_module(module), base),),
                {"__init__": refuse, "create": staticmethod(refuse)})
