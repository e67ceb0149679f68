"""Hardware and build flows: `hls`, `vivado`, `new-kernel`, `new-overlay`, `build-torch`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..flows.reports import ReportError
from ..flows.scaffold import OPS, ScaffoldError, new_kernel, new_overlay
from ..flows.tools import FlowError, LineSink, ToolMissing, ToolRun, run_hls, run_vivado
from ..flows.torch_build import BuildScriptMissing, build_torch_command
from ..hw.description import DescriptionError
from ..hw.kernels import find_kernel
from ..hw.overlay import OverlayError, find_overlay
from ._app import app, console, emit_json, err_console, fail

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="do not echo the tool's output")]
AsJson = Annotated[bool, typer.Option("--json", help="print the run and its reports as JSON")]


@contextmanager
def _progress(title: str, phases: list[str], quiet: bool) -> Iterator[LineSink]:
    """A progress display on stderr advancing one step per completed phase, with the tool's lines above it."""
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task(f"{title}: {phases[0]}", total=len(phases))

        def on_line(line: str, phase: str | None) -> None:
            if not quiet:
                progress.console.print(Text(line, style="dim"))
            if phase is not None:
                progress.advance(task)
                done = int(progress.tasks[0].completed)
                nxt = phases[done] if done < len(phases) else "finishing"
                progress.update(task, description=f"{title}: {nxt}")

        yield on_line


def _finish(run: ToolRun, tool: str, as_json: bool) -> None:
    if as_json:
        emit_json(run.as_dict())
    else:
        console.print(f"{tool}: exit {run.returncode} after {run.seconds:.1f} s; log: {run.log}")
        for name, report in run.reports.items():
            table = Table(title=name, show_header=False)
            for key, value in report.items():
                table.add_row(key, str(value))
            console.print(table)
    if run.returncode != 0:
        fail(f"{tool} failed with exit code {run.returncode}; see {run.log}", code=run.returncode)


@app.command()
def hls(
    kernel: Annotated[str, typer.Argument(help="kernel name or kernel folder")],
    csim: Annotated[bool, typer.Option("--csim", help="C simulation with the kernel's testbench")] = False,
    csynth: Annotated[bool, typer.Option("--csynth", help="C synthesis (latency, II, resources)")] = False,
    cosim: Annotated[bool, typer.Option("--cosim", help="C/RTL co-simulation (needs --csynth)")] = False,
    export: Annotated[bool, typer.Option("--export", help="export the IP for Vivado (needs --csynth)")] = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Run Vitis HLS on a kernel's run_hls.tcl (default steps: --csim --csynth)."""
    try:
        info = find_kernel(kernel)
    except (KeyError, DescriptionError) as e:
        fail(str(e.args[0]) if isinstance(e, KeyError) else str(e))
    chosen = [s for s, on in (("csim", csim), ("csynth", csynth), ("cosim", cosim), ("export", export)) if on]
    steps = chosen or ["csim", "csynth"]
    try:
        with _progress(f"HLS {info.name}", steps, quiet) as sink:
            run = run_hls(info, steps, sink)
    except (ToolMissing, FlowError, ReportError) as e:
        fail(str(e))
    _finish(run, "HLS", as_json)


@app.command()
def vivado(
    overlay: Annotated[str, typer.Argument(help="overlay name or overlay folder")],
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=0, help="parallel implementation jobs (0: auto)")] = 0,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Build an overlay's bitstream with Vivado (run_vivado.tcl); writes <overlay>.bit and .hwh."""
    try:
        info = find_overlay(overlay)
        repos = [find_kernel(ip.kernel).folder for ip in info.spec.ips]
    except OverlayError as e:
        fail(str(e))
    except KeyError as e:
        fail(f"overlay {overlay}: {e.args[0]}")
    phases = ["project", "block design", "synthesis", "implementation", "bitstream"]
    try:
        with _progress(f"Vivado {info.name}", phases, quiet) as sink:
            run = run_vivado(info, list(dict.fromkeys(repos)), sink, jobs or None)
    except (ToolMissing, FlowError, ReportError) as e:
        fail(str(e))
    _finish(run, "Vivado", as_json)


@app.command("new-kernel")
def new_kernel_cmd(
    name: Annotated[str, typer.Argument(help="kernel name (a C identifier; also the top function)")],
    tile: Annotated[int, typer.Option("--tile", help="tile size T: the kernel computes T×T×T per call")] = 64,
    variant: Annotated[str, typer.Option("--variant", help="multipliers on 'dsp' slices or 'fabric' LUTs")] = "dsp",
    dest: Annotated[Path, typer.Option("--dest", help="folder in which the kernel folder is created")] = Path(),
    op: Annotated[str | None, typer.Option(
        "--op", help=f"a float32 map/rows kernel of this op instead of a GEMM: {', '.join(OPS)}")] = None,
) -> None:
    """Create a kernel folder: HLS C++, header, testbench, description.json, hls_config.cfg, run_hls.tcl."""
    if variant not in ("dsp", "fabric"):
        fail(f"--variant must be 'dsp' or 'fabric', got {variant!r}")
    v: Literal["dsp", "fabric"] = "dsp" if variant == "dsp" else "fabric"
    try:
        files = new_kernel(name, dest, tile, v, op)
    except ScaffoldError as e:
        fail(str(e))
    what = f"{tile}×{tile}×{tile} int8, {variant}" if op is None else f"{OPS[op].family} kernel of {OPS[op].aten}"
    console.print(f"created kernel [bold]{name}[/] ({what}) in {files[0].parent}")
    for f in files:
        console.print(f"  {f.name}")


@app.command("new-overlay")
def new_overlay_cmd(
    name: Annotated[str, typer.Argument(help="overlay name (a C identifier; also the bitstream name)")],
    kernel: Annotated[list[str], typer.Option("--kernel", "-k", help="kernel to instantiate (repeatable)")],
    dest: Annotated[Path, typer.Option("--dest", help="folder in which the overlay folder is created")] = Path(),
    clock_mhz: Annotated[int, typer.Option("--clock-mhz", min=10, max=250, help="fabric clock FCLK_CLK0")] = 100,
) -> None:
    """Create an overlay folder (overlay.json, block_design.tcl, run_vivado.tcl) for PYNQ-Z2."""
    for k in kernel:
        try:
            find_kernel(k)
        except KeyError as e:
            fail(str(e.args[0]))
    try:
        files = new_overlay(name, kernel, dest, clock_mhz)
    except ScaffoldError as e:
        fail(str(e))
    console.print(f"created overlay [bold]{name}[/] with {', '.join(kernel)} in {files[0].parent}")
    for f in files:
        console.print(f"  {f.name}")


@app.command("build-torch", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def build_torch(ctx: typer.Context) -> None:
    """Build PyTorch for ARMv7l in a qemu armhf chroot (forwards all options to sw/build_torch.sh --help)."""
    try:
        argv = build_torch_command(list(ctx.args))
    except BuildScriptMissing as e:
        fail(str(e))
    raise typer.Exit(subprocess.run(argv, check=False).returncode)
