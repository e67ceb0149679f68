"""Per-op cost of the CPU fallback: small-tensor ops on zynq vs the same ops on CPU.

`python -m pynqtorch.bench.fallback [--size 8] [--batch 500] [--repeats 40] [--json]` prints, per op, the
time per call on CPU and on zynq (best batch of `repeats`, so other load on the machine inflates it least)
and the microseconds the fallback adds. Nothing is asserted: the figures are for reading.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

import pynqtorch


def best_per_call(fn: Callable[[], object], batch: int, repeats: int) -> float:
    """Seconds per call of `fn`: the fastest of `repeats` batches of `batch` calls."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        best = min(best, (time.perf_counter() - t0) / batch)
    return best


def cases(size: int) -> dict[str, Callable[[torch.device], Callable[[], object]]]:
    """Op name -> (device -> a zero-argument call of that op on tensors of `size` elements there)."""
    a, b = torch.randn(size), torch.randn(size)

    def on(fn: Callable[[torch.Tensor, torch.Tensor], object]) -> Callable[[torch.device], Callable[[], object]]:
        def make(device: torch.device) -> Callable[[], object]:
            x, y = a.to(device), b.to(device)
            return lambda: fn(x, y)

        return make

    return {
        "add": on(lambda x, y: x + y),
        "add_ (in-place)": on(lambda x, y: x.add_(y)),
        "mul scalar": on(lambda x, y: x * 2.0),
        "relu": on(lambda x, y: torch.relu(x)),
        "sum": on(lambda x, y: x.sum()),
        "view": on(lambda x, y: x.view(-1, 1)),
        "empty": lambda device: lambda: torch.empty(size, device=device),
    }


def run(size: int = 8, batch: int = 500, repeats: int = 40) -> dict[str, dict[str, float]]:
    """Microseconds per call on CPU and zynq, and the difference, for each case (one torch thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cpu, zynq = torch.device("cpu"), torch.device("zynq")
    out: dict[str, dict[str, float]] = {}
    try:
        for name, make in cases(size).items():
            t_cpu = best_per_call(make(cpu), batch, repeats) * 1e6
            t_zynq = best_per_call(make(zynq), batch, repeats) * 1e6
            out[name] = {"cpu_us": t_cpu, "zynq_us": t_zynq, "added_us": t_zynq - t_cpu}
    finally:
        torch.set_num_threads(threads)
        pynqtorch.reset_report()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pynqtorch.bench.fallback", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=8, help="elements per tensor")
    parser.add_argument("--batch", type=int, default=500, help="calls per timed batch")
    parser.add_argument("--repeats", type=int, default=40, help="batches; the fastest counts")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    res = run(args.size, args.batch, args.repeats)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"CPU fallback overhead, tensors of {args.size} elements (best of {args.repeats} x {args.batch} calls)")
    print(f"{'op':18s} {'cpu µs':>9s} {'zynq µs':>9s} {'added µs':>9s}")
    for name, r in res.items():
        print(f"{name:18s} {r['cpu_us']:9.2f} {r['zynq_us']:9.2f} {r['added_us']:9.2f}")


if __name__ == "__main__":
    main()
