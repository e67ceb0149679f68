"""Per-op cost of accelerated ops at the zoo's quick sizes: ``python -m pynqtorch.bench.perop [--reps N] [--threads T]``
prints µs per call through the zynq device (target ref) and on CPU float32, interleaved in one run (so machine load
hits both), their ratio, and the engine call alone (`engine.gemm` on CPU tensors, weight cached) where it applies."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

import pynqtorch
from pynqtorch import engine
from pynqtorch.bench.timing import interleaved_medians

Case = tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...], Callable[[], torch.Tensor] | None]


def _linear(g: torch.Generator, m: int, k: int, n: int) -> Case:
    x, w, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n, generator=g)
    return F.linear, (x, w, b), lambda: engine.gemm(x, w.t(), weight=True, owner=w, version=0)


def _bmm(g: torch.Generator, bt: int, m: int, k: int, n: int) -> Case:
    a, b = torch.randn(bt, m, k, generator=g), torch.randn(bt, k, n, generator=g)
    return torch.bmm, (a, b), lambda: engine.gemm(a, b)


def _conv(g: torch.Generator, shape: tuple[int, int, int, int], out: int, k: int, stride: int, pad: int,
          groups: int) -> Case:
    x = torch.randn(*shape, generator=g)
    w, b = torch.randn(out, shape[1] // groups, k, k, generator=g), torch.randn(out, generator=g)
    return (lambda x, w, b: F.conv2d(x, w, b, stride, pad, 1, groups)), (x, w, b), None


def cases() -> dict[str, Case]:
    """Shapes of the zoo's quick models (`pynqtorch.bench.zoo`, `--quick`)."""
    g = torch.Generator().manual_seed(0)
    return {
        "linear 8x64 -> 64": _linear(g, 8, 64, 64),
        "linear ViT 34x128 -> 128": _linear(g, 34, 128, 128),
        "linear ViT 34x256 -> 128": _linear(g, 34, 256, 128),
        "linear BERT 64x128 -> 512": _linear(g, 64, 128, 512),
        "linear BERT 64x512 -> 128": _linear(g, 64, 512, 128),
        "bmm BERT attention 8x32x32x32": _bmm(g, 8, 32, 32, 32),
        "bmm ViT attention 8x17x32x17": _bmm(g, 8, 17, 32, 17),
        "conv ResNet 2x3x32x32 7x7/2 -> 16": _conv(g, (2, 3, 32, 32), 16, 7, 2, 3, 1),
        "conv ResNet 2x4x8x8 3x3 -> 4": _conv(g, (2, 4, 8, 8), 4, 3, 1, 1, 1),
        "conv ResNet 2x16x8x8 1x1 -> 4": _conv(g, (2, 16, 8, 8), 4, 1, 1, 0, 1),
        "depthwise MobileNetV2 2x96x6x6 3x3": _conv(g, (2, 96, 6, 6), 96, 3, 1, 0, 96),
        "depthwise MobileNetV2 2x48x17x17 3x3/2": _conv(g, (2, 48, 17, 17), 48, 3, 2, 0, 48),
        "depthwise MobileNetV2 2x144x4x4 3x3": _conv(g, (2, 144, 4, 4), 144, 3, 1, 0, 144),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the zoo's --threads 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pynqtorch.use(target="ref")
    print(f"torch threads: {torch.get_num_threads()}; medians of {args.reps} interleaved calls")
    print(f"{'op':40} {'cpu µs':>8} {'zynq µs':>8} {'zynq/cpu':>9} {'engine.gemm µs':>15}")
    with torch.no_grad():
        for name, (fn, cpu_args, engine_call) in cases().items():
            zynq_args = tuple(a.to("zynq") for a in cpu_args)
            fns = [lambda fn=fn, a=cpu_args: fn(*a), lambda fn=fn, a=zynq_args: fn(*a)]
            times = interleaved_medians(fns + ([engine_call] if engine_call else []), args.reps)
            eng = f"{times[2] * 1e6:15.1f}" if engine_call else f"{'-':>15}"
            print(f"{name:40} {times[0] * 1e6:8.1f} {times[1] * 1e6:8.1f} {times[1] / times[0]:9.2f} {eng}")


if __name__ == "__main__":
    main()
