"""torch.compile on zynq: ``python benchmarks/compile.py [--reps N] [--threads T]`` prints eager, compiled
(backend "pynqtorch") and CPU float32 times per forward, interleaved in one run, and their ratios."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

import pynqtorch
from pynqtorch.bench.timing import interleaved_medians
from pynqtorch.device.compiler import pynqtorch as backend
from pynqtorch.examples.digits import DigitsCNN

MODELS = {
    "mlp 256-512-512-10, batch 64": (lambda: torch.nn.Sequential(
        torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.LayerNorm(512), torch.nn.Linear(512, 512),
        torch.nn.GELU(), torch.nn.Linear(512, 10), torch.nn.Softmax(-1)), (64, 256)),
    "digits CNN, batch 64": (DigitsCNN, (64, 1, 8, 8)),
}


def measure(make: Callable[[], torch.nn.Module], shape: tuple[int, ...], reps: int) -> list[float]:
    """Median seconds per forward: eager on zynq, compiled on zynq, float32 on CPU (interleaved)."""
    torch.manual_seed(0)
    cpu = make().eval()
    zynq = make().eval()
    zynq.load_state_dict(cpu.state_dict())
    zynq = zynq.to("zynq")
    compiled = torch.compile(zynq, backend=backend)
    x = torch.randn(shape)
    xz = x.to("zynq")
    with torch.no_grad():
        return interleaved_medians([lambda: zynq(xz).cpu(), lambda: compiled(xz).cpu(), lambda: cpu(x)], reps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's); on a loaded machine 1 avoids OpenMP spinning")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pynqtorch.use(target="ref")
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"{'model':32} {'eager ms':>9} {'compiled ms':>12} {'cpu ms':>8} {'eager/compiled':>15} {'compiled/cpu':>13}")
    for name, (make, shape) in MODELS.items():
        eager_s, compiled_s, cpu_s = measure(make, shape, args.reps)
        print(f"{name:32} {eager_s * 1e3:9.2f} {compiled_s * 1e3:12.2f} {cpu_s * 1e3:8.2f} "
              f"{eager_s / compiled_s:15.2f} {compiled_s / cpu_s:13.1f}")


if __name__ == "__main__":
    main()
