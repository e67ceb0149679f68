"""PNG plots of the GEMM sweep and model latencies (matplotlib's Agg canvas, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def gemm_plots(res: dict[str, Any], out: Path) -> list[Path]:
    """``gemm_time.png`` (time per dtype: CPU, zynq per target, predicted board) and ``gemm_error.png``."""
    rows = res["rows"]
    dtypes = res["dtypes"]
    targets = list(dict.fromkeys(r["target"] for r in rows))
    fig = Figure(figsize=(4 * len(dtypes), 3.6))
    for i, dt in enumerate(dtypes):
        ax = fig.add_subplot(1, len(dtypes), i + 1)
        sel = [r for r in rows if r["dtype"] == dt]
        first = [r for r in sel if r["target"] == targets[0]]
        ns = [r["n"] for r in first]
        ax.plot(ns, [r["cpu_ms"] for r in first], "o-", label="CPU (torch)")
        for t in targets:
            ts = [r for r in sel if r["target"] == t]
            ax.plot([r["n"] for r in ts], [r["zynq_ms"] for r in ts], "s-", label=f"zynq {t}")
        ax.plot(ns, [r["board_ms"] for r in first], "^--", label=f"board (model, {res['clock_mhz']:g} MHz)")
        ax.set_yscale("log")
        ax.set_xlabel("n (n×n @ n×n)")
        ax.set_ylabel("ms")
        ax.set_title(f"{dt} inputs")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    paths = [_save(fig, out / "gemm_time.png")]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for dt in dtypes:
        ts = [r for r in rows if r["dtype"] == dt and r["target"] == targets[0]]
        ax.plot([r["n"] for r in ts], [max(r["l2_rel"], 1e-12) for r in ts], "o-", label=dt)
    ax.set_yscale("log")
    ax.set_xlabel("n")
    ax.set_ylabel("relative L2 error vs exact product")
    ax.set_title(f"zynq ({targets[0]}) GEMM error (1e-12 floor: exact)")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(_save(fig, out / "gemm_error.png"))
    return paths


def model_plot(res: dict[str, Any], out: Path) -> Path:
    """``models_latency.png``: grouped bars of latency per model: CPU, each target, predicted board."""
    rows = res["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    targets = list(dict.fromkeys(r["target"] for r in rows if r["target"] != "cpu"))
    series = ["cpu", *targets, "board"]
    fig = Figure(figsize=(max(6.0, 2.4 * len(models)), 4))
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for j, s in enumerate(series):
        values = []
        for m in models:
            if s == "board":
                ms = [r["board_ms"] for r in rows if r["model"] == m and "board_ms" in r][:1]
            else:
                ms = [r["ms"] for r in rows if r["model"] == m and r["target"] == s and "ms" in r]
            values.append(ms[0] if ms else 0.0)
        label = f"board (model, {res['clock_mhz']:g} MHz)" if s == "board" else ("CPU fp32" if s == "cpu"
                                                                                 else f"zynq {s}")
        ax.bar([i + (j - (len(series) - 1) / 2) * width for i in range(len(models))], values, width, label=label)
    batches = {r["model"]: r["batch"] for r in rows}
    ax.set_xticks(range(len(models)), [f"{m}\n(batch {batches[m]})" for m in models], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title("model latency per target")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, out / "models_latency.png")


def zoo_plot(res: dict[str, Any], out: Path, name: str = "zoo") -> Path:
    """``<name>.png``: zynq/CPU time ratio per model (median, min-max range) and where each zynq forward's time
    goes, as a fraction of the CPU forward (compiled zoo: inductor runs as a part of their own)."""
    rows = [r for r in res["rows"] if "ratio" in r]
    names = [r["model"] for r in rows]
    x = range(len(rows))
    fig = Figure(figsize=(max(7.0, 0.9 * len(rows)), 7))
    ax = fig.add_subplot(2, 1, 1)
    med = [r["ratio"] for r in rows]
    ax.bar(x, med, color="tab:blue", yerr=[[m - r["ratio_min"] for m, r in zip(med, rows)],
                                           [r["ratio_max"] - m for m, r in zip(med, rows)]], capsize=3)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(2.0, color="tab:red", ls="--", lw=0.8, label="target per model (2x)")
    if res.get("geomean_ratio"):
        ax.axhline(res["geomean_ratio"], color="tab:green", ls=":", label=f"geomean {res['geomean_ratio']:.2f}x")
    ax.set_xticks(list(x), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("zynq / CPU fp32 time")
    mode = "torch.compile" if res.get("compiled") else "eager"
    ax.set_title(f"model zoo on {res['target']}, {mode} (torch threads: {res['threads']}, {res['reps']} interleaved "
                 "rounds)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(2, 1, 2)
    bottom = [0.0] * len(rows)
    parts = (("kernel_run_ms", "kernel calls"), ("host_ms", "accelerated ops: host"),
             ("fallback_ms", "CPU-fallback ops"), ("inductor_ms", "inductor runs"), ("other_ms", "dispatch and the rest"))
    for key, label in parts:
        if not any(key in r["time"] or key == "host_ms" for r in rows):
            continue
        vals = []
        for r in rows:
            t = r["time"]
            v = t["accelerated_ms"] - t["kernel_run_ms"] if key == "host_ms" else t.get(key, 0.0)
            vals.append(v / r["cpu_ms"])
        ax.bar(x, vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(list(x), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("zynq time / CPU time")
    ax.set_title("where the zynq time goes")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, out / f"{name}.png")
