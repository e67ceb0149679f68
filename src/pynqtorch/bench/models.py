"""Model latency per target: the digits CNN, an MLP and all-MiniLM-L6-v2 on CPU fp32 and on zynq.

Each model runs once per target (``ref``, ``csim``, ...) with its parameters on zynq and the default
quantization scheme; times are medians over a few runs after one warm-up run. The predicted board time
is the kernel's cycle model (``hw/perf.py``, AXI terms included) at 100 MHz plus the board target's per-call
host stages (``BOARD_HOST``), summed over every GEMM the model issues (shapes recorded on the CPU run:
linear/matmul, bmm, and convolutions as their im2col GEMM).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..hw.description import Description
from ..hw.perf import BOARD_HOST, workload_perf
from ..targets import registry
from .gemm import CLOCK_MHZ
from .timing import interleaved_medians

aten = torch.ops.aten
MODELS = ("digits", "mlp", "minilm")
CPU_REPS = 5  # the CPU run is cheap: at least this many repetitions


def _rows(shape: torch.Size) -> int:
    """Product of all dims but the last (the M of ``x @ W`` for a batched x)."""
    return shape[:-1].numel()


class GemmShapes(TorchDispatchMode):
    """Records ``(batch, m, n, k)`` of every GEMM-family aten op run on CPU inside the mode.

    Composite ops appear whole under ``torch.inference_mode`` (linear, matmul, conv2d, scaled dot-product
    attention) and as their parts otherwise (addmm, bmm, convolution); each GEMM is counted once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, int, int, int]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        packet = func.overloadpacket
        add = self.shapes.append
        if packet in (aten.mm, aten.addmm):
            a, b = args[-2], args[-1]
            add((1, a.shape[0], b.shape[1], a.shape[1]))
        elif packet is aten.linear:
            x, w = args[0], args[1]
            add((1, _rows(x.shape), w.shape[0], w.shape[1]))
        elif packet in (aten.bmm, aten.baddbmm, aten.matmul):
            a, b = args[-2], args[-1]
            if b.dim() == 2:
                add((1, _rows(a.shape), b.shape[1], b.shape[0]))
            else:
                add((torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]).numel(), a.shape[-2], b.shape[-1],
                     a.shape[-1]))
        elif packet is aten.scaled_dot_product_attention:
            q, k, v = args[:3]
            batch = q.shape[:-2].numel()
            add((batch, q.shape[-2], k.shape[-2], q.shape[-1]))  # q @ k^T
            add((batch, q.shape[-2], v.shape[-1], k.shape[-2]))  # softmax(...) @ v
        elif packet in (aten.mv, aten.addmv):
            a = args[-2]
            add((1, a.shape[0], 1, a.shape[1]))
        elif packet is aten.dot:
            add((1, 1, 1, args[0].shape[0]))
        out = func(*args, **kwargs)
        if packet in (aten.convolution, aten.conv1d, aten.conv2d) and out.dim() in (3, 4):
            x, w = args[0], args[1]
            groups = x.shape[-w.dim() + 1] // w.shape[1]
            add((groups, out.shape[0] * out.shape[2:].numel(), w.shape[0] // groups, w.shape[1:].numel()))
        return out


def predicted_board_s(desc: Description, shapes: Sequence[tuple[int, int, int, int]]) -> float:
    """Board seconds of all `shapes` on `desc` at `CLOCK_MHZ`: cycle model plus the per-call host stages."""
    p = workload_perf(desc, shapes, CLOCK_MHZ, BOARD_HOST)
    return p["kernel_s"] + p["host_s"]


@dataclass
class Workload:
    """A model and one input batch: `forward(model, dev)` runs it with inputs on device `dev`."""

    name: str
    batch: int
    model: torch.nn.Module
    forward: Callable[[torch.nn.Module, str], torch.Tensor]
    zynq_model: Callable[[], torch.nn.Module]


def digits_workload(batch: int) -> Workload:
    """The trained digits CNN (cached weights) on `batch` held-out images."""
    from ..examples import digits

    split = digits.load_split()
    model, _ = digits.trained_model(split)
    x = split.x_test[:batch]
    return Workload("digits-cnn", batch, model, lambda m, dev: m(x.to(dev)),
                    lambda: copy.deepcopy(model).to("zynq"))


def mlp_workload(batch: int) -> Workload:
    """A 784-512-512-10 MLP (ReLU), seeded random weights, on `batch` random rows."""
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                                torch.nn.ReLU(), torch.nn.Linear(512, 10)).eval()
    x = torch.randn(batch, 784, generator=g)
    return Workload("mlp-784-512-512-10", batch, model, lambda m, dev: m(x.to(dev)),
                    lambda: copy.deepcopy(model).to("zynq"))


def minilm_workload(batch: int) -> Workload:
    """all-MiniLM-L6-v2 embedding `batch` of the example's sentences."""
    from ..examples import minilm

    sentences = minilm.SENTENCES[:batch]
    model = minilm.load_model()

    def on_zynq() -> torch.nn.Module:
        z = minilm.load_model()
        return z.to("zynq")

    return Workload("minilm-l6", batch, model, lambda m, dev: minilm.embed(m, sentences, dev), on_zynq)


WORKLOADS: dict[str, Callable[[int], Workload]] = {
    "digits": digits_workload, "mlp": mlp_workload, "minilm": minilm_workload}
BATCHES = {"digits": 360, "mlp": 64, "minilm": 32}
QUICK_BATCHES = {"digits": 32, "mlp": 8, "minilm": 4}


@torch.no_grad()
def measure(w: Workload, targets: Sequence[str], reps: int,
            advance: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Rows for workload `w`: CPU fp32 once, then each target (with its predicted board time)."""
    with GemmShapes() as rec:
        expected = w.forward(w.model, "cpu")
    (t_cpu,) = interleaved_medians([lambda: w.forward(w.model, "cpu")], max(reps, CPU_REPS))
    rows = [{"model": w.name, "batch": w.batch, "target": "cpu", "ms": t_cpu * 1e3, "vs_cpu": 1.0,
             "rel_err": 0.0, "gemms": len(rec.shapes)}]
    for target in targets:
        if advance is not None:
            advance(f"{w.name} (batch {w.batch}) on {target}")
        active = registry.use(target)
        row: dict[str, Any] = {"model": w.name, "batch": w.batch, "target": target, "kernel": active.desc.name}
        try:
            zm = w.zynq_model()
            got = w.forward(zm, "zynq").cpu()
            (t,) = interleaved_medians([lambda zm=zm: w.forward(zm, "zynq")], reps)
        except (RuntimeError, NotImplementedError, OverflowError, TypeError, ValueError) as e:
            # a model failing on zynq is a result of the benchmark: reported in its row, the others still run
            row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
            continue
        board = predicted_board_s(active.desc, rec.shapes)
        row.update(ms=t * 1e3, vs_cpu=t_cpu / t,
                   rel_err=float((got.double() - expected.double()).norm() / expected.double().norm()),
                   board_ms=board * 1e3, board_vs_cpu=t_cpu / board if board else None)
        rows.append(row)
    return rows


def run(quick: bool = False, targets: Sequence[str] = ("ref", "csim"), models: Sequence[str] = MODELS,
        advance: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Latency rows for every model of `models` on CPU and on each target, plus the predicted board time."""
    batches = QUICK_BATCHES if quick else BATCHES
    reps = 1 if quick else 3
    rows = []
    for name in models:
        if advance is not None:
            advance(f"loading {name}")
        rows += measure(WORKLOADS[name](batches[name]), targets, reps, advance)
    return {"threads": torch.get_num_threads(), "clock_mhz": CLOCK_MHZ, "reps": reps, "rows": rows}


def steps(targets: Sequence[str], models: Sequence[str] = MODELS) -> int:
    """Number of `advance` calls `run` makes (for a progress bar)."""
    return len(models) * (1 + len(targets))
