"""Engine benchmark: float GEMM on `ref` vs torch fp32, host path per tile on `null`, error per scheme, an MLP
(engine level), and an MLP and a small CNN through the zynq device.

Run ``python -m pynqtorch.bench.engine [--quick]``. Every figure is measured in this run: timings are medians
of interleaved repetitions (engine and torch alternate, so machine load hits both), ratios are engine / torch.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from .. import engine
from ..engine import QuantConfig
from ..hw.kernels import find_kernel
from ..targets import registry
from .timing import interleaved_medians

SCHEMES = {
    "per_tensor (w+a)": QuantConfig.per_tensor(),
    "per_channel w, per_tensor a": QuantConfig(weights="per_channel", activations="per_tensor"),
    "per_tensor w, per_row a": QuantConfig(weights="per_tensor", activations="per_row"),
    "per_channel w, per_row a (default)": QuantConfig(),
    "per_group_32 w, per_row a": QuantConfig(weights="per_group_32"),
    "per_group_128 w, per_row a": QuantConfig(weights="per_group_128"),
}


def gemm_vs_torch(sizes: Sequence[int], reps: int, kernel: str) -> list[dict[str, Any]]:
    """Float32 n×n×n on ref: dynamic B and cached-weight B, against torch fp32 on CPU."""
    engine.use("ref", kernel=kernel)
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in sizes:
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        t_torch, t_dyn, t_w = interleaved_medians([lambda a=a, b=b: a @ b, lambda a=a, b=b: engine.gemm(a, b),
                                           lambda a=a, b=b: engine.gemm(a, b, weight=True)], reps)
        rows.append({"n": n, "torch_ms": t_torch * 1e3, "engine_ms": t_dyn * 1e3, "weight_ms": t_w * 1e3,
                     "ratio": t_dyn / t_torch, "weight_ratio": t_w / t_torch})
    return rows


def host_path(n: int, reps: int, kernel: str, units: int) -> dict[str, Any]:
    """Engine time per kernel tile with `null` units (no arithmetic): the host path alone."""
    engine.use("null", kernel=kernel, units=units)
    desc = registry.active().desc
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    engine.reset_stats()
    engine.gemm(a, b)
    tiles = sum(engine.stats()["tiles_per_unit"].values())
    t_dyn, t_w = interleaved_medians([lambda: engine.gemm(a, b), lambda: engine.gemm(a, b, weight=True)], reps)
    engine.reset_stats()
    engine.gemm(a, b, weight=True)
    phases = engine.stats()["phases_s"]
    return {"n": n, "kernel": desc.name, "tile": (desc.tile.m, desc.tile.n, desc.tile.k), "units": units,
            "tiles": tiles, "ms_per_tile": t_dyn * 1e3 / tiles, "weight_ms_per_tile": t_w * 1e3 / tiles,
            "loop_ms_per_tile": phases["schedule_wall"] * 1e3 / tiles,
            "phases_ms": {k: v * 1e3 for k, v in phases.items()}}


def scheme_errors(kernel: str) -> list[dict[str, Any]]:
    """Relative Frobenius error of float32 GEMM vs float64, per scheme, on plain data, skewed rows/columns
    and weights with outliers along K (a few entries 20x the rest in every column); None where the kernel
    cannot run the scheme."""
    engine.use("ref", kernel=kernel)
    g = torch.Generator().manual_seed(2)
    a, w = torch.randn(256, 1024, generator=g), torch.randn(1024, 512, generator=g)
    skew_a = a * torch.logspace(-2, 0, 256).unsqueeze(1)
    skew_w = w * torch.logspace(0, -2, 512).unsqueeze(0)
    out_w = w.clone()
    out_w[torch.randint(0, 1024, (4, 512), generator=g), torch.arange(512)] *= 20
    rows = []
    for name, cfg in SCHEMES.items():
        errs: list[float | None] = [None] * 3
        if engine.unsupported(cfg) is None:
            for i, (x, y) in enumerate(((a, w), (skew_a, skew_w), (a, out_w))):
                exact = x.double() @ y.double()
                out = engine.gemm(x, y, weight=True, config=cfg).double()
                errs[i] = float((out - exact).norm() / exact.norm())
        rows.append({"scheme": name, "randn": errs[0], "skewed": errs[1], "outliers": errs[2]})
    return rows


def mlp(reps: int, kernel: str, batch: int = 64) -> dict[str, Any]:
    """784-512-512-10 MLP (ReLU), every linear through `engine.gemm` with a cached weight, vs torch fp32."""
    engine.use("ref", kernel=kernel)
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                                torch.nn.ReLU(), torch.nn.Linear(512, 10)).eval()
    x = torch.randn(batch, 784)
    layers = [m for m in model if isinstance(m, torch.nn.Linear)]

    def on_engine() -> torch.Tensor:
        h = x
        for i, lin in enumerate(layers):
            h = engine.gemm(h, lin.weight.t(), weight=True).add_(lin.bias)
            if i < len(layers) - 1:
                h = h.relu_()
        return h

    with torch.no_grad():
        t_torch, t_eng = interleaved_medians([lambda: model(x), on_engine], reps)
        ref, out = model(x), on_engine()
    return {"batch": batch, "torch_ms": t_torch * 1e3, "engine_ms": t_eng * 1e3, "ratio": t_eng / t_torch,
            "rel_err": float((out - ref).norm() / ref.norm())}


def device_models(reps: int, kernel: str) -> list[dict[str, Any]]:
    """MLP 784-512-512-10 (batch 64) and a digits-like CNN (conv 1->16, conv 16->32, 3x3 pad 1 on 8x8, maxpool,
    linear; batch 32) moved to the zynq device (`ref` target), vs the same models on CPU in fp32."""
    engine.use("ref", kernel=kernel)
    torch.manual_seed(4)
    nn = torch.nn
    models = {
        "MLP 784-512-512-10, batch 64": (
            nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)),
            torch.randn(64, 784)),
        "CNN conv 1-16-32 (8x8), batch 32": (
            nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 16, 10)),
            torch.randn(32, 1, 8, 8)),
    }
    rows = []
    for name, (model, x) in models.items():
        model.eval()
        zmodel, zx = copy.deepcopy(model).to("zynq"), x.to("zynq")
        with torch.no_grad():
            t_cpu, t_dev = interleaved_medians([lambda m=model, x=x: m(x), lambda m=zmodel, x=zx: m(x)], reps)
            ref, out = model(x), zmodel(zx).cpu()
        rows.append({"model": name, "torch_ms": t_cpu * 1e3, "device_ms": t_dev * 1e3, "ratio": t_dev / t_cpu,
                     "rel_err": float((out - ref).norm() / ref.norm())})
    return rows


def run(quick: bool = False, ref_kernel: str = "gemm_i8_packed", host_kernel: str = "gemm_i8_dsp",
        units: int = 1) -> dict[str, Any]:
    """All measurements as plain data."""
    reps = 5 if quick else 25
    saved = registry.current()
    try:
        return {
            "threads": torch.get_num_threads(),
            "gemm": gemm_vs_torch([256, 512, 1024], reps, ref_kernel),
            "host": host_path(1024, reps, host_kernel, units),
            "errors": scheme_errors(ref_kernel),
            "mlp": mlp(reps * 4, ref_kernel),
            "device": device_models(reps * 4, ref_kernel),
        }
    finally:
        if saved is not None:
            registry.use(saved.name, kernel=saved.desc, **saved.options)
        else:
            registry.reset()


def render(res: dict[str, Any], console: Console) -> None:
    t = Table(title=f"float32 GEMM n³: zynq-ref engine vs torch fp32 (CPU, {res['threads']} threads)")
    for c in ("n", "torch ms", "engine ms", "ratio", "cached weight ms", "ratio (weight)"):
        t.add_column(c, justify="right")
    for r in res["gemm"]:
        t.add_row(str(r["n"]), f"{r['torch_ms']:.3f}", f"{r['engine_ms']:.3f}", f"{r['ratio']:.2f}x",
                  f"{r['weight_ms']:.3f}", f"{r['weight_ratio']:.2f}x")
    console.print(t)
    h = res["host"]
    t = Table(title=f"host path, null units ({h['units']}), {h['n']}³ on {h['kernel']} tile {h['tile']}")
    for c in ("tiles", "ms/tile", "ms/tile (cached weight)", "ms/tile (tile loop only)"):
        t.add_column(c, justify="right")
    t.add_row(str(h["tiles"]), f"{h['ms_per_tile']:.4f}", f"{h['weight_ms_per_tile']:.4f}",
              f"{h['loop_ms_per_tile']:.4f}")
    console.print(t)
    console.print("  phases of one cached-weight call (ms, summed over threads): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in h["phases_ms"].items()))
    t = Table(title="relative error of float32 GEMM vs float64 (256×1024 @ 1024×512)")
    for c in ("scheme", "randn", "skewed rows/cols", "outliers along K"):
        t.add_column(c, justify="right" if c != "scheme" else "left")
    for r in res["errors"]:
        t.add_row(r["scheme"], *(f"{r[c]:.2e}" if r[c] is not None else "-" for c in ("randn", "skewed", "outliers")))
    console.print(t)
    m = res["mlp"]
    t = Table(title=f"MLP 784-512-512-10, batch {m['batch']}: engine (ref) vs torch fp32")
    for c in ("torch ms", "engine ms", "ratio", "rel. error"):
        t.add_column(c, justify="right")
    t.add_row(f"{m['torch_ms']:.3f}", f"{m['engine_ms']:.3f}", f"{m['ratio']:.2f}x", f"{m['rel_err']:.2e}")
    console.print(t)
    if "device" in res:
        t = Table(title="models on the zynq device (ref) vs torch fp32 on CPU, under no_grad")
        for c in ("model", "torch ms", "device ms", "ratio", "rel. error"):
            t.add_column(c, justify="right" if c != "model" else "left")
        for r in res["device"]:
            t.add_row(r["model"], f"{r['torch_ms']:.3f}", f"{r['device_ms']:.3f}", f"{r['ratio']:.2f}x",
                      f"{r['rel_err']:.2e}")
        console.print(t)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pynqtorch.bench.engine", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--ref-kernel", default="gemm_i8_packed", help="kernel for the ref GEMM, error and MLP rows")
    p.add_argument("--host-kernel", default="gemm_i8_dsp", help="kernel for the null host-path row")
    p.add_argument("--units", type=int, default=1, help="null compute units for the host-path row")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    for k in (args.ref_kernel, args.host_kernel):
        find_kernel(k)  # fail early with the list of known kernels
    render(run(args.quick, args.ref_kernel, args.host_kernel, args.units), Console())


if __name__ == "__main__":
    main()
