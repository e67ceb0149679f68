"""`pynqtorch run <example>` and the global `--debug` option (tracebacks of unexpected errors)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..device.report import OpStat, Report
from ..examples import EXAMPLES
from ..targets.base import TargetUnavailable
from ..targets.offload import parse_offload
from ..targets.registry import target_names, unavailable_reason
from ._app import app, console, emit_json, err_console, fail


def _short_excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """One line instead of a traceback; `--debug` keeps Python's own hook."""
    if issubclass(exc_type, KeyboardInterrupt):
        err_console.print("[bold red]interrupted[/]")
        return
    err_console.print(f"[bold red]error:[/] {exc_type.__name__}: {escape(str(exc))}\n"
                      "[dim](run `pynqtorch --debug ...` for the traceback)[/]")


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of unexpected errors.")]
         = False) -> None:
    """HLS-accelerated PyTorch for PYNQ boards."""
    sys.excepthook = sys.__excepthook__ if debug else _short_excepthook


def check_target(target: str | None) -> None:
    """Exit 2 with a message when `target` is unknown or cannot run here."""
    if target is None:
        return
    if target not in (*target_names(), "auto"):
        fail(f"unknown target {target!r}; choose one of {', '.join([*target_names(), 'auto'])}")
    reason = unavailable_reason(target) if target != "auto" else None
    if reason is not None:
        fail(f"target {target!r} is unavailable here: {reason}")


@contextmanager
def progress_steps(enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr whose text follows the steps reported through the yielded callback."""
    if not enabled:
        yield lambda _msg: None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                  transient=True) as prog:
        task = prog.add_task("starting", total=None)
        yield lambda msg: prog.update(task, description=msg)


def report_from_dict(d: dict[str, Any]) -> Report:
    """A printable Report from `Report.to_dict()` output."""
    def ops(x: dict[str, dict[str, float]]) -> dict[str, OpStat]:
        return {k: OpStat(int(v["calls"]), float(v["seconds"])) for k, v in x.items()}

    return Report(ops(d["accelerated"]), ops(d["cpu"]), d["engine"], d.get("fallback_reasons", {}))


def _print_digits(r: dict[str, Any]) -> None:
    console.print(report_from_dict(r["report"]))
    t = Table(title=f"digits CNN: top-1 on {r['test_size']} held-out images "
                    f"(target {r['target']}, kernel {r['kernel']})")
    for c in ("run", "weights / activations", "top-1", "Δ vs fp32", "argmax = fp32"):
        t.add_column(c, justify="left" if c in ("run", "weights / activations") else "right",
                     no_wrap=c in ("run", "scheme", "weights / activations"))
    t.add_row("CPU fp32", "-", f"{r['fp32_top1']:.2%}", "-", "-")
    for name, s in r["schemes"].items():
        if "skipped" not in s:
            t.add_row(f"zynq {name}", s["scheme"], f"{s['top1']:.2%}",
                      f"{(s['top1'] - r['fp32_top1']) * 100:+.2f} pp", f"{s['agreement']:.2%}")
    console.print(t)
    _print_skipped(r)
    trained = ("weights from cache" if r["train_seconds"] is None
               else f"trained in {r['train_seconds']:.1f} s")
    console.print(f"[dim]{trained}: {r['weights']}[/]")


def _print_minilm(r: dict[str, Any]) -> None:
    console.print(report_from_dict(r["report"]))
    console.print("fallback ops (ran on CPU): "
                  + ", ".join(f"{op} ×{n}" for op, n in r["fallback_ops"].items()))
    t = Table(title=f"all-MiniLM-L6-v2: cosine similarity of {r['sentences']} sentence embeddings, "
                    f"zynq vs CPU fp32 (target {r['target']}, kernel {r['kernel']})")
    for c in ("scheme", "weights / activations", "mean cosine", "min cosine", "seconds"):
        t.add_column(c, justify="left" if c in ("scheme", "weights / activations") else "right",
                     no_wrap=c in ("run", "scheme", "weights / activations"))
    for name, s in r["schemes"].items():
        if "skipped" not in s:
            t.add_row(name, s["scheme"], f"{s['mean_cosine']:.5f}", f"{s['min_cosine']:.5f}",
                      f"{s['seconds']:.2f}")
    console.print(t)
    _print_skipped(r)


def _print_skipped(r: dict[str, Any]) -> None:
    """The schemes the example's kernel could not run, with the reason."""
    for name, s in r["schemes"].items():
        if "skipped" in s:
            console.print(f"[dim]scheme {name} not run: {escape(s['skipped'])}[/]")


def _run_example(name: str, target: str | None, progress: Callable[[str], None],
                 offload: str | None) -> dict[str, Any]:
    if name == "digits":
        from ..examples import digits

        return digits.run(target, progress=progress, offload=offload)
    from ..examples import minilm

    return minilm.run(target, progress=progress, offload=offload)


@app.command("run")
def run_cmd(
    example: Annotated[str, typer.Argument(help=f"Example to run: {', '.join(EXAMPLES)}.")],
    target: Annotated[str | None, typer.Option(
        "--target", "-t", help="ref | csim | board | auto (default: PYNQTORCH_TARGET, else ref).")] = None,
    offload: Annotated[str | None, typer.Option(
        "--offload", help="Non-GEMM ops on map/rows kernels: gemm (none), all, or op names such as "
                          "gelu,softmax,layer_norm (default: PYNQTORCH_OFFLOAD, else gemm).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run an example model on the zynq device and compare it with CPU fp32."""
    if example not in EXAMPLES:
        fail(f"unknown example {example!r}; choose one of {', '.join(EXAMPLES)}")
    check_target(target)
    if offload is not None:
        try:
            parse_offload(offload)
        except ValueError as e:
            fail(str(e))
    try:
        with progress_steps(not json_out) as step:
            result = _run_example(example, target, step, offload)
    except TargetUnavailable as e:
        fail(str(e))
    if json_out:
        emit_json(result)
    elif example == "digits":
        _print_digits(result)
    else:
        _print_minilm(result)
