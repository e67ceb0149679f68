"""The model zoo: real architectures on zynq vs CPU fp32, eager, same threads, one interleaved run.

Transformers models are built from their config classes (random init, fixed seeds, nothing downloaded):
ResNet, MobileNetV2, ConvNeXt, ViT, BERT, GPT-2, T5; plus a LeNet (flattened with ``view``), an LSTM, a GRU
and ``nn.TransformerEncoder``. Per model: the zynq/CPU time ratio (median of interleaved rounds), the
relative error of the output, kernel calls, ops that fell back to CPU and where the zynq time goes
(accelerated ops, of which engine phases; CPU-fallback ops; the rest is dispatch and framework time), and
the predicted board time of the model's GEMMs: kernel cycles (`hw.perf`) plus the modelled Cortex-A9 host
cost of every call (`hw.perf.BOARD_HOST`). GEMMs are recorded on the CPU run (linear, matmul, bmm, convolutions);
those inside CPU's fused attention and recurrent kernels are not seen there, so those models' board
figures are partial.

With ``compile=True`` every model runs through ``torch.compile(model, backend="pynqtorch")`` on zynq and is
compared, in the same interleaved rounds, with CPU fp32 eager, CPU fp32 compiled by inductor (PyTorch's default
backend) and zynq eager. Compilation (the first call of each compiled model) is timed separately, never in a
ratio. A compiled row also counts dynamo's graphs and graph breaks, recompiles during the rounds, and the
inductor runs that ran eagerly instead (`device.compiler.STATS`); a model dynamo gave the backend no graph for,
or whose timed forwards called no compiled graph, is an error row, never an eager run counted as compiled.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..hw.perf import BOARD_HOST, workload_perf
from ..reporting import report, reset_report
from ..targets import registry
from .gemm import CLOCK_MHZ
from .models import GemmShapes
from .timing import interleaved_times


@dataclass
class ZooModel:
    """A model in eval mode and its input (CPU); `run(model, x)` returns the output tensor to compare."""

    name: str
    family: str
    model: nn.Module
    inputs: tuple[torch.Tensor, ...]
    run: Callable[..., torch.Tensor]


def _hf_out(field: str) -> Callable[..., torch.Tensor]:
    return lambda m, *xs: getattr(m(*xs), field)


class LeNet(nn.Module):
    """LeNet-5 for 1×28×28 inputs, flattened with ``view`` as the classic code does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class Recurrent(nn.Module):
    """A two-layer LSTM or GRU over a sequence, returning the full output."""

    def __init__(self, kind: type[nn.RNNBase], inp: int, hidden: int) -> None:
        super().__init__()
        self.rnn = kind(inp, hidden, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


def _image(n: int, c: int, s: int, g: torch.Generator) -> tuple[torch.Tensor]:
    return (torch.randn(n, c, s, s, generator=g),)


def _tokens(n: int, s: int, vocab: int, g: torch.Generator) -> tuple[torch.Tensor]:
    return (torch.randint(0, vocab, (n, s), generator=g),)


def _build(name: str, quick: bool) -> ZooModel:
    """Model `name` with seeded weights and inputs (`quick`: smaller batch and sizes)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers as tf

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    b = 2 if quick else 8
    img = 32 if quick else 64
    seq = 32 if quick else 64
    if name == "lenet":
        return ZooModel(name, "cnn", LeNet(), (torch.randn(4 * b, 1, 28, 28, generator=g),), lambda m, x: m(x))
    if name == "resnet":
        cfg = tf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1])
        return ZooModel(name, "cnn", tf.ResNetModel(cfg), _image(b, 3, img, g), _hf_out("pooler_output"))
    if name == "mobilenet_v2":
        cfg = tf.MobileNetV2Config(depth_multiplier=0.35, image_size=img)
        return ZooModel(name, "cnn", tf.MobileNetV2Model(cfg), _image(b, 3, img, g), _hf_out("pooler_output"))
    if name == "convnext":
        cfg = tf.ConvNextConfig(hidden_sizes=[24, 48, 96, 192], depths=[1, 1, 2, 1], image_size=img)
        return ZooModel(name, "cnn", tf.ConvNextModel(cfg), _image(b, 3, img, g), _hf_out("pooler_output"))
    if name == "vit":
        cfg = tf.ViTConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
                           image_size=img, patch_size=8)
        return ZooModel(name, "transformer", tf.ViTModel(cfg, add_pooling_layer=False), _image(b, 3, img, g),
                        _hf_out("last_hidden_state"))
    if name == "bert":
        cfg = tf.BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                            intermediate_size=512)
        return ZooModel(name, "transformer", tf.BertModel(cfg, add_pooling_layer=False),
                        _tokens(b, seq, 1000, g), _hf_out("last_hidden_state"))
    if name == "gpt2":
        cfg = tf.GPT2Config(vocab_size=1000, n_positions=128, n_embd=128, n_layer=4, n_head=4)
        return ZooModel(name, "transformer", tf.GPT2Model(cfg), _tokens(b, seq, 1000, g),
                        _hf_out("last_hidden_state"))
    if name == "t5":
        cfg = tf.T5Config(vocab_size=1000, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4)
        enc, dec = _tokens(b, seq, 1000, g)[0], _tokens(b, seq // 2, 1000, g)[0]
        return ZooModel(name, "transformer", tf.T5Model(cfg), (enc, dec),
                        lambda m, e, d: m(input_ids=e, decoder_input_ids=d).last_hidden_state)
    if name == "transformer_encoder":
        layer = nn.TransformerEncoderLayer(128, 4, 256, dropout=0.0, batch_first=True)
        return ZooModel(name, "transformer", nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                        (torch.randn(b, seq, 128, generator=g),), lambda m, x: m(x))
    if name in ("lstm", "gru"):
        model = Recurrent(nn.LSTM if name == "lstm" else nn.GRU, 64, 128)
        return ZooModel(name, "rnn", model, (torch.randn(b, seq, 64, generator=g),), lambda m, x: m(x))
    raise ValueError(f"unknown zoo model {name!r}; choose from {', '.join(MODELS)}")


MODELS = ("lenet", "resnet", "mobilenet_v2", "convnext", "vit", "bert", "gpt2", "t5", "transformer_encoder",
          "lstm", "gru")


def _where(rep: dict[str, Any], seconds: float, reps: int, split_s: float = 0.0, lowered_s: float = 0.0
           ) -> dict[str, float]:
    """Per-forward milliseconds: accelerated ops (of which engine kernel calls `run` and host passes), CPU
    fallback ops, inductor-compiled code on CPU views (compiled models only: runs of split graphs, `split_s`, and
    whole lowered graphs less the ops they call, `lowered_s`, over `reps` forwards), and the rest (dispatch,
    framework, Python between ops)."""
    acc = sum(v["seconds"] for v in rep["accelerated"].values()) / reps
    cpu = sum(v["seconds"] for v in rep["cpu"].values()) / reps
    ind = split_s / reps + (max(lowered_s / reps - acc - cpu, 0.0) if lowered_s else 0.0)
    phases = rep["engine"].get("phases_s", {})
    run = phases.get("run", 0.0) / reps
    return {"total_ms": seconds * 1e3, "accelerated_ms": acc * 1e3, "kernel_run_ms": run * 1e3,
            "fallback_ms": cpu * 1e3, "inductor_ms": ind * 1e3, "other_ms": max(seconds - acc - cpu - ind, 0.0) * 1e3}


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    e, g = want.double(), got.double()
    return float((g - e).norm() / e.norm()) if e.norm() > 0 else float((g - e).norm())


def _ratio(num: list[float], den: list[float]) -> tuple[float, float, float]:
    """Median, min and max of the per-round ratios."""
    r = sorted(n / d for n, d in zip(num, den, strict=True))
    return statistics.median(r), r[0], r[-1]


def _counts(rep: dict[str, Any], reps: int) -> dict[str, Any]:
    """Per-forward kernel calls, accelerated and fallback ops, and the top fallbacks, from a report."""
    return {
        "kernel_calls": rep["engine"].get("counters", {}).get("kernel_calls", 0) // reps,
        "accelerated_ops": sum(v["calls"] for v in rep["accelerated"].values()) // reps,
        "fallback_ops": sum(v["calls"] for v in rep["cpu"].values()) // reps,
        "top_fallbacks": {k: v["calls"] // reps for k, v in
                          sorted(rep["cpu"].items(), key=lambda kv: -kv[1]["seconds"])[:5]},
    }


@torch.no_grad()
def measure(name: str, quick: bool, reps: int) -> dict[str, Any]:
    """One zoo row: CPU fp32 and zynq forwards timed in interleaved rounds (median ratio and range)."""
    zm = _build(name, quick)
    model = zm.model.eval()
    zmodel = copy.deepcopy(model).to("zynq")
    zx = tuple(x.to("zynq") for x in zm.inputs)
    with GemmShapes() as rec:
        expected = zm.run(model, *zm.inputs)
    board = workload_perf(registry.active().desc, rec.shapes, CLOCK_MHZ, BOARD_HOST)
    base = {"model": name, "family": zm.family, "params": sum(p.numel() for p in model.parameters()),
            "board": {"kernel_ms": board["kernel_s"] * 1e3, "host_ms": board["host_s"] * 1e3,
                      "calls": board["calls"]}}
    got = zm.run(zmodel, *zx).cpu()  # warm-up: weights quantized once here
    zm.run(model, *zm.inputs)
    reset_report()
    cpu_t, zynq_t = interleaved_times([lambda: zm.run(model, *zm.inputs), lambda: zm.run(zmodel, *zx).cpu()], reps)
    rep = report().to_dict()
    ratio, lo, hi = _ratio(zynq_t, cpu_t)
    return {**base, "cpu_ms": statistics.median(cpu_t) * 1e3, "zynq_ms": statistics.median(zynq_t) * 1e3,
            "ratio": ratio, "ratio_min": lo, "ratio_max": hi, "rel_err": _rel_err(got, expected),
            **_counts(rep, reps), "time": _where(rep, statistics.median(zynq_t), reps)}


class NotCompiled(RuntimeError):
    """The compiled model did not run as compiled (no graph reached the backend, or no compiled graph ran)."""


@torch.no_grad()
@torch._dynamo.config.patch(allow_rnn=True)
def measure_compiled(name: str, quick: bool, reps: int) -> dict[str, Any]:
    """One compiled zoo row: zynq compiled (backend "pynqtorch") vs CPU fp32 eager and inductor-compiled, with
    zynq eager, in interleaved rounds after warm-up; compile times, graphs and graph breaks on the side.
    Recurrent modules are traced (PyTorch's `torch._dynamo.config.allow_rnn`, for both compiled models)."""
    from torch._dynamo.utils import counters

    from ..device.backend import pynqtorch  # the entry point of backend="pynqtorch"
    from ..device.compiler import STATS

    zm = _build(name, quick)
    model = zm.model.eval()
    zmodel = copy.deepcopy(model).to("zynq")
    zx = tuple(x.to("zynq") for x in zm.inputs)
    expected = zm.run(model, *zm.inputs)
    eager = zm.run(zmodel, *zx).cpu()  # warm-up: weights quantized once here
    torch._dynamo.reset()
    ccpu = torch.compile(model)
    t0 = time.perf_counter()
    zm.run(ccpu, *zm.inputs)
    cpu_compile_s = time.perf_counter() - t0
    counters.clear()
    STATS.reset()
    czynq = torch.compile(zmodel, backend=pynqtorch)
    t0 = time.perf_counter()
    got = zm.run(czynq, *zx).cpu()
    zynq_compile_s = time.perf_counter() - t0
    breaks = sum(counters["graph_break"].values())
    if STATS.graphs == 0:
        raise NotCompiled(f"dynamo gave the backend no graph ({breaks} graph breaks): the model ran eagerly")
    graphs = counters["stats"]["unique_graphs"]
    runs = {"lowered": STATS.lowered, "gemm": STATS.gemm_runs, "inductor": STATS.host_runs, "eager": STATS.eager_runs}
    fns = [lambda: zm.run(model, *zm.inputs), lambda: zm.run(ccpu, *zm.inputs),
           lambda: zm.run(czynq, *zx).cpu(), lambda: zm.run(zmodel, *zx).cpu()]
    for f in fns:  # a second warm-up: recompiles triggered by the first calls happen here
        f()
    graphs_before = counters["stats"]["unique_graphs"]
    cpu_t, ccpu_t, zynq_t, eager_t = interleaved_times(fns, reps)
    recompiles = counters["stats"]["unique_graphs"] - graphs_before
    reset_report()  # the op/kernel counts and time split of the compiled forward alone
    STATS.reset()
    t0 = time.perf_counter()
    for _ in range(reps):
        zm.run(czynq, *zx).cpu()
    forward_s = (time.perf_counter() - t0) / reps
    if STATS.graph_calls == 0:
        raise NotCompiled("the compiled forwards called no compiled graph: the model ran eagerly")
    rep = report().to_dict()
    ratio, lo, hi = _ratio(zynq_t, cpu_t)
    vs_inductor, vs_lo, vs_hi = _ratio(zynq_t, ccpu_t)
    return {
        "model": name, "family": zm.family, "params": sum(p.numel() for p in model.parameters()),
        "cpu_ms": statistics.median(cpu_t) * 1e3, "cpu_compiled_ms": statistics.median(ccpu_t) * 1e3,
        "zynq_ms": statistics.median(zynq_t) * 1e3, "zynq_eager_ms": statistics.median(eager_t) * 1e3,
        "ratio": ratio, "ratio_min": lo, "ratio_max": hi,
        "ratio_vs_compiled_cpu": vs_inductor, "ratio_vs_compiled_cpu_min": vs_lo,
        "ratio_vs_compiled_cpu_max": vs_hi, "eager_ratio": _ratio(eager_t, cpu_t)[0],
        "compile_s": {"cpu": cpu_compile_s, "zynq": zynq_compile_s},
        "rel_err": _rel_err(got, expected), "rel_diff_vs_eager": _rel_err(got, eager),
        "graphs": graphs, "graph_breaks": breaks, "recompiles": recompiles, "runs": runs,
        "graph_calls": STATS.graph_calls // reps,
        **_counts(rep, reps), "time": _where(rep, forward_s, reps, STATS.host_s, STATS.lowered_s),
    }


def _geomean(rows: list[dict[str, Any]], key: str) -> float | None:
    ok = [r[key] for r in rows if key in r]
    return math.exp(sum(math.log(r) for r in ok) / len(ok)) if ok else None


def run(quick: bool = False, models: Sequence[str] = MODELS, target: str = "ref",
        advance: Callable[[str], None] | None = None, compile: bool = False) -> dict[str, Any]:
    """Zoo rows on `target` (eager, or compiled with backend "pynqtorch"), plus the geometric means of the
    ratios (over the rows that ran)."""
    reps = 3 if quick else 7
    registry.use(target)
    rows = []
    for name in models:
        if advance is not None:
            advance(f"{name} on {target}" + (" (compiled)" if compile else ""))
        try:
            rows.append(measure_compiled(name, quick, reps) if compile else measure(name, quick, reps))
        except Exception as e:  # noqa: BLE001 -- any failure (incl. dynamo's and inductor's) is the row's error
            rows.append({"model": name, "error": f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"})
    res = {"target": target, "compiled": compile, "threads": torch.get_num_threads(), "reps": reps, "quick": quick,
           "clock_mhz": CLOCK_MHZ, "board_host": "hw.perf.BOARD_HOST (Cortex-A9 650 MHz, modelled)",
           "geomean_ratio": _geomean(rows, "ratio"), "rows": rows}
    if compile:
        res["geomean_vs_compiled_cpu"] = _geomean(rows, "ratio_vs_compiled_cpu")
        res["geomean_eager_ratio"] = _geomean(rows, "eager_ratio")
    return res
