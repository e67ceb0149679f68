"""`pynqtorch bench gemm|models|engine|zoo|all`: benchmark tables, JSON and PNG plots in an output folder."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ..targets.registry import unavailable_reason
from ._app import app, console, emit_json, err_console, fail
from .run import check_target

SUITES = ("gemm", "models", "engine", "zoo", "all")


@contextmanager
def _bar(total: int, enabled: bool) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr; the yielded callback names the next step and advances past the previous."""
    if not enabled:
        yield lambda _msg: None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=True) as prog:
        task = prog.add_task("starting", total=total)
        started = False

        def advance(msg: str) -> None:
            nonlocal started
            prog.update(task, description=msg, advance=1 if started else 0)
            started = True

        yield advance


def _opt(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def gemm_tables(res: dict[str, Any]) -> list[Table]:
    """Time and accuracy tables of the GEMM sweep."""
    speed = Table(title=f"GEMM n³: time on zynq vs torch on CPU ({res['threads']} threads); board = cycle "
                        f"model at {res['clock_mhz']:g} MHz (AXI terms) + board host stages")
    for c in ("n", "dtype", "target", "CPU ms", "zynq ms", "speedup", "board ms", "board speedup"):
        speed.add_column(c, justify="left" if c in ("dtype", "target") else "right")
    acc = Table(title="GEMM n³: zynq result vs exact product",
                caption="int8 *: pynqtorch.engine.gemm(a, b, out_dtype=torch.int32) vs CPU a.int() @ b.int() "
                        "(torch's int8 @ int8 is int8; the engine raises OverflowError rather than wrap)")
    for c in ("n", "dtype", "target", "L2 rel. error", "max |diff|", "exact %", "limb products"):
        acc.add_column(c, justify="left" if c in ("dtype", "target") else "right")
    for r in res["rows"]:
        dtype = r["dtype"] + (" *" if r["dtype"] == "int8" else "")
        speed.add_row(str(r["n"]), dtype, r["target"], f"{r['cpu_ms']:.3f}", f"{r['zynq_ms']:.3f}",
                      f"{r['speedup']:.2f}x", f"{r['board_ms']:.3f}", f"{r['board_speedup']:.2f}x")
        acc.add_row(str(r["n"]), dtype, r["target"], f"{r['l2_rel']:.2e}", f"{r['max_abs_diff']:.3g}",
                    _opt(r["exact_pct"], ".2f"), str(r["limb_products"]))
    return [speed, acc]


def models_table(res: dict[str, Any]) -> Table:
    t = Table(title=f"model latency on zynq vs CPU fp32, default quantization ({res['threads']} threads, "
                    f"median of {res['reps']} on zynq)",
              caption=f"rel. err: output vs CPU fp32; board: cycle model at {res['clock_mhz']:g} MHz summed "
                      "over every GEMM of the model (AXI terms) + board host stages per call")
    for c in ("model", "batch", "ran on", "ms", "vs CPU", "rel. err", "board ms", "board vs CPU"):
        t.add_column(c, justify="left" if c in ("model", "ran on") else "right")
    for r in res["rows"]:
        if "error" in r:
            t.add_row(r["model"], str(r["batch"]), r["target"], "[red]failed[/]", "", "", "", "")
            continue
        where = "cpu fp32" if r["target"] == "cpu" else r["target"]
        board = "board_ms" in r
        t.add_row(r["model"], str(r["batch"]), where, f"{r['ms']:.2f}", f"{r['vs_cpu']:.2f}x",
                  f"{r['rel_err']:.2e}", f"{r['board_ms']:.3f}" if board else "",
                  _opt(r.get("board_vs_cpu"), ".2f") + "x" if board and r.get("board_vs_cpu") else "")
    return t


def zoo_table(res: dict[str, Any]) -> Table:
    if res.get("compiled"):
        return zoo_compiled_table(res)
    geo = res["geomean_ratio"]
    t = Table(title=f"model zoo on {res['target']}, eager, vs CPU fp32 (torch threads: {res['threads']}; median of "
                    f"{res['reps']} interleaved rounds, range in brackets)",
              caption=f"geometric mean of the ratios: {'-' if geo is None else format(geo, '.2f')}x; time split "
                      "per zynq forward: kernel calls / host part of accelerated ops / CPU-fallback ops / rest")
    t.caption += (f"; board: predicted kernel ms ({res['clock_mhz']:g} MHz cycle model) + host ms "
                  f"({res['board_host']}) over its calls")
    for c in ("model", "CPU ms", "zynq ms", "zynq/CPU", "rel. err", "kernel calls", "accel. ops", "fallback ops",
              "kernel / host / fallback / rest ms", "board: kernel + host ms (calls)"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for r in res["rows"]:
        if "error" in r:
            t.add_row(r["model"], "[red]failed[/]", "", "", "", "", "", "", r["error"][:60], "")
            continue
        w = r["time"]
        split = (f"{w['kernel_run_ms']:.1f} / {w['accelerated_ms'] - w['kernel_run_ms']:.1f} / "
                 f"{w['fallback_ms']:.1f} / {w['other_ms']:.1f}")
        t.add_row(r["model"], f"{r['cpu_ms']:.2f}", f"{r['zynq_ms']:.2f}",
                  f"{r['ratio']:.2f}x [{r['ratio_min']:.2f}-{r['ratio_max']:.2f}]", f"{r['rel_err']:.1e}",
                  str(r["kernel_calls"]), str(r["accelerated_ops"]), str(r["fallback_ops"]), split,
                  f"{r['board']['kernel_ms']:.2f} + {r['board']['host_ms']:.1f} ({r['board']['calls']})")
    return t


def zoo_compiled_table(res: dict[str, Any]) -> Table:
    """The compiled zoo: zynq compiled vs CPU eager and CPU inductor, graphs, compile times, time split."""
    def geo(key: str) -> str:
        return _opt(res[key], ".2f") + "x"

    t = Table(title=f"model zoo on {res['target']}, torch.compile(backend='pynqtorch') vs CPU fp32 (torch threads: "
                    f"{res['threads']}; median of {res['reps']} interleaved rounds, range in brackets)",
              caption=f"geometric means: zynq compiled / CPU eager {geo('geomean_ratio')}, / CPU inductor "
                      f"{geo('geomean_vs_compiled_cpu')}; zynq eager / CPU eager {geo('geomean_eager_ratio')} "
                      "(over the rows that ran). compile s: first call, not in any ratio. graphs (breaks): "
                      "dynamo's; runs: whole graphs with lowered GEMMs, else of split graphs GEMM / inductor / "
                      "eager (inductor refused). time split per compiled "
                      "forward: kernel / host part of accelerated ops / CPU-fallback ops / inductor runs / rest")
    for c in ("model", "CPU ms", "CPU inductor ms", "zynq ms", "zynq/CPU", "zynq/CPU inductor", "eager zynq/CPU",
              "compile s zynq / CPU", "rel. err", "graphs (breaks)", "runs", "kernel calls", "fallback ops",
              "kernel / host / fallback / inductor / rest ms"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for r in res["rows"]:
        if "error" in r:
            t.add_row(r["model"], "[red]failed[/]", *[""] * 11, r["error"][:80])
            continue
        w, runs = r["time"], r["runs"]
        split = (f"{w['kernel_run_ms']:.1f} / {w['accelerated_ms'] - w['kernel_run_ms']:.1f} / "
                 f"{w['fallback_ms']:.1f} / {w['inductor_ms']:.1f} / {w['other_ms']:.1f}")
        t.add_row(r["model"], f"{r['cpu_ms']:.2f}", f"{r['cpu_compiled_ms']:.2f}", f"{r['zynq_ms']:.2f}",
                  f"{r['ratio']:.2f}x [{r['ratio_min']:.2f}-{r['ratio_max']:.2f}]",
                  f"{r['ratio_vs_compiled_cpu']:.2f}x", f"{r['eager_ratio']:.2f}x",
                  f"{r['compile_s']['zynq']:.1f} / {r['compile_s']['cpu']:.1f}", f"{r['rel_err']:.1e}",
                  f"{r['graphs']} ({r['graph_breaks']})",
                  f"{runs['lowered']} | {runs['gemm']} / {runs['inductor']} / {runs['eager']}",
                  str(r["kernel_calls"]), str(r["fallback_ops"]), split)
    return t


def _write(out: Path, name: str, res: dict[str, Any]) -> Path:
    path = out / f"{name}.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    return path


def _gemm(quick: bool, targets: list[str], out: Path, show: bool) -> dict[str, Any]:
    from ..bench import gemm, plots

    with _bar(gemm.steps(quick, targets), show) as advance:
        res = gemm.run(quick, targets, advance)
    files = [_write(out, "gemm", res), *plots.gemm_plots(res, out)]
    if show:
        for t in gemm_tables(res):
            console.print(t)
    return {**res, "files": [str(f) for f in files]}


def _models(quick: bool, targets: list[str], out: Path, show: bool) -> dict[str, Any]:
    from ..bench import models, plots

    with _bar(models.steps(targets), show) as advance:
        res = models.run(quick, targets, advance=advance)
    files = [_write(out, "models", res), plots.model_plot(res, out)]
    if show:
        console.print(models_table(res))
    return {**res, "files": [str(f) for f in files]}


def _engine(quick: bool, out: Path, show: bool) -> dict[str, Any]:
    from ..bench import engine

    with _bar(1, show) as advance:
        advance("engine benchmark (ref GEMM, null host path, error per scheme, MLP)")
        res = engine.run(quick=quick)
    path = _write(out, "engine", res)
    if show:
        engine.render(res, console)
    return {**res, "files": [str(path)]}


def _zoo(quick: bool, target: str, models: list[str] | None, out: Path, show: bool, compile: bool = False
         ) -> dict[str, Any]:
    from ..bench import plots, zoo

    names = models or list(zoo.MODELS)
    unknown = sorted(set(names) - set(zoo.MODELS))
    if unknown:
        fail(f"unknown zoo model(s) {', '.join(unknown)}; choose from {', '.join(zoo.MODELS)}")
    with _bar(len(names), show) as advance:
        res = zoo.run(quick, names, target, advance, compile=compile)
    name = "zoo-compile" if compile else "zoo"
    files = [_write(out, name, res), plots.zoo_plot(res, out, name)]
    if show:
        console.print(zoo_table(res))
    return {**res, "files": [str(f) for f in files]}


@app.command("bench")
def bench_cmd(
    suite: Annotated[str, typer.Argument(help=f"Benchmark suite: {' | '.join(SUITES)}.")],
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes and batches, few repetitions (CI).")] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for the JSON results and PNG plots.")] = Path("bench-out"),
    target: Annotated[list[str] | None, typer.Option(
        "--target", "-t", help="Target to measure (repeatable; gemm default: ref, models default: ref and "
                               "csim).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="zoo: only these models (repeatable; default: all).")] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="Torch threads for CPU and zynq runs alike (default: torch's).")] = None,
    compile_: Annotated[bool, typer.Option(
        "--compile", help="zoo: torch.compile every model (backend 'pynqtorch' on zynq; CPU eager and inductor "
                          "alongside); writes zoo-compile.json/.png.")] = False,
) -> None:
    """GEMM sweep (time, speedup, error, predicted board time), model latency per target, engine benchmark,
    model zoo (real architectures, zynq/CPU ratio, error, kernel calls, fallbacks, time split; eager or with
    torch.compile)."""
    if suite not in SUITES:
        fail(f"unknown benchmark suite {suite!r}; choose one of {', '.join(SUITES)}")
    for t in target or []:
        check_target(t)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"cannot create output folder {out}: {e}")
    show = not json_out
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    result: dict[str, Any] = {"suite": suite, "quick": quick, "out": str(out)}
    if suite in ("gemm", "all"):
        result["gemm"] = _gemm(quick, target or ["ref"], out, show)
    if suite in ("models", "all"):
        usable = [t for t in ("ref", "csim") if unavailable_reason(t) is None]
        result["models"] = _models(quick, target or usable, out, show)
    if suite in ("engine", "all"):
        result["engine"] = _engine(quick, out, show)
    if suite in ("zoo", "all"):
        result["zoo"] = _zoo(quick, (target or ["ref"])[0], model, out, show, compile_)
    failed = [r for part in ("models", "zoo") for r in result.get(part, {}).get("rows", []) if "error" in r]
    if json_out:
        emit_json(result)
    else:
        files = [f for part in ("gemm", "models", "engine", "zoo") for f in result.get(part, {}).get("files", [])]
        console.print("wrote " + ", ".join(files))
    if failed:
        err_console.print(f"[bold red]error:[/] {len(failed)} model run(s) failed: "
                          + "; ".join(f"{r['model']} on {r.get('target', result.get('zoo', {}).get('target'))}: "
                                      f"{r['error']}" for r in failed))
        raise typer.Exit(1)
