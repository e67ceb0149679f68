"""Per-op cost of the CPU fallback: small-tensor ops on zynq vs the same ops on CPU.

`python -m pynqtorch.bench.fallback [--shape 64,64] [--batch 500] [--repeats 40] [--json]` prints, per op, the
time per call on CPU and on zynq (best batch of `repeats`, so other load on the machine inflates it least)
and the microseconds the fallback adds; with the native fallback built, zynq is timed through it and through
the Python path (`python_us`), batches of the three interleaved. Nothing is asserted: the figures are for
reading.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

import pynqtorch
from pynqtorch.device import native


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


def cases(shape: tuple[int, ...]) -> dict[str, Callable[[torch.device], Callable[[], object]]]:
    """Op name -> (device -> a zero-argument call of that op on tensors of `shape` there)."""
    a, b = torch.randn(shape), torch.randn(shape)
    w, bias = torch.ones(shape[-1]), torch.zeros(shape[-1])

    def on(fn: Callable[..., object]) -> Callable[[torch.device], Callable[[], object]]:
        def make(device: torch.device) -> Callable[[], object]:
            x, y, w_, b_ = (t.to(device) for t in (a, b, w, bias))
            return lambda: fn(x, y, w_, b_)

        return make

    return {
        "add": on(lambda x, y, *_: x + y),
        "add_ (in-place)": on(lambda x, y, *_: x.add_(y)),
        "mul scalar": on(lambda x, y, *_: x * 2.0),
        "relu": on(lambda x, y, *_: torch.relu(x)),
        "sum": on(lambda x, y, *_: x.sum()),
        "gelu": on(lambda x, y, *_: torch.nn.functional.gelu(x)),
        "softmax": on(lambda x, y, *_: x.softmax(-1)),
        "layer_norm": on(lambda x, y, w_, b_: torch.nn.functional.layer_norm(x, x.shape[-1:], w_, b_)),
        "transpose+contiguous": on(lambda x, y, *_: x.mT.contiguous()),
        "cat": on(lambda x, y, *_: torch.cat([x, y])),
        "view": on(lambda x, y, *_: x.view(-1, 1)),
        "empty": lambda device: lambda: torch.empty(shape, device=device),
    }


def run(shape: tuple[int, ...] = (64, 64), batch: int = 500, repeats: int = 40) -> dict[str, dict[str, float]]:
    """Microseconds per call on CPU and zynq, and the difference, for each case (one torch thread); with the
    native fallback, also zynq through the Python path (`python_us`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cpu, zynq = torch.device("cpu"), torch.device("zynq")
    both = native.fallback_enabled()
    out: dict[str, dict[str, float]] = {}
    try:
        for name, make in cases(shape).items():
            calls = {"cpu_us": make(cpu), "zynq_us": make(zynq)}
            if both:
                calls["python_us"] = calls["zynq_us"]
            best = dict.fromkeys(calls, float("inf"))
            for _ in range(repeats):  # one batch of each per round: load on the machine hits all alike
                for key, fn in calls.items():
                    native.fallback_enabled(key != "python_us")
                    best[key] = min(best[key], best_per_call(fn, batch, 1) * 1e6)
            out[name] = {**best, "added_us": best["zynq_us"] - best["cpu_us"]}
    finally:
        native.fallback_enabled(True)
        torch.set_num_threads(threads)
        pynqtorch.reset_report()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pynqtorch.bench.fallback", description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="64,64", help="tensor shape, comma-separated (at least 2-D)")
    parser.add_argument("--batch", type=int, default=500, help="calls per timed batch")
    parser.add_argument("--repeats", type=int, default=40, help="batches; the fastest counts")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    shape = tuple(int(n) for n in args.shape.split(","))
    res = run(shape, args.batch, args.repeats)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"CPU fallback overhead, tensors of shape {shape} (best of {args.repeats} x {args.batch} calls; zynq "
          f"through the {'native' if 'python_us' in next(iter(res.values())) else 'Python'} fallback)")
    print(f"{'op':22s} {'cpu µs':>9s} {'zynq µs':>9s} {'added µs':>9s} {'python µs':>10s}")
    for name, r in res.items():
        py = f"{r['python_us']:10.2f}" if "python_us" in r else ""
        print(f"{name:22s} {r['cpu_us']:9.2f} {r['zynq_us']:9.2f} {r['added_us']:9.2f} {py}")


if __name__ == "__main__":
    main()
