"""`pynqtorch kernels | csim | verify | perf`: list kernels, run a testbench, check C simulation, predict time."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import asdict

import typer
from rich.markup import escape
from rich.table import Table

from ..hw.description import DescriptionError
from ..hw.kernels import KernelInfo, find_kernel, kernel_errors, kernels
from ._app import app, console, emit_json, fail


def _kernel(name_or_folder: str) -> KernelInfo:
    try:
        return find_kernel(name_or_folder)
    except KeyError as e:
        fail(e.args[0])
    except DescriptionError as e:
        fail(str(e))


def _tile(info: KernelInfo) -> str:
    d = info.desc
    if d.op != "gemm":
        return ", ".join(d.aten)
    t = d.tile
    return f"{t.m}x{t.n}x{t.k}"


def _max(info: KernelInfo) -> str:
    d = info.desc
    if d.op == "map":
        return f"block {d.limits.block}"
    if d.op == "rows":
        return f"{d.limits.max_rows} rows x {d.limits.max_cols}"
    return "x".join(str(d.dim_limit(x)) for x in ("m", "n", "k"))


def _json_entry(k: KernelInfo) -> dict:
    d = k.desc
    entry = {"name": k.name, "op": d.op, "priority": d.priority, "origin": k.origin, "folder": str(k.folder)}
    if d.op == "gemm":
        entry.update(tile=d.tile.model_dump(), runtime_dims=d.runtime_dims, max={x: d.dim_limit(x) for x in "mnk"})
    else:
        entry.update(aten=d.aten, io=d.io.model_dump(), limits=d.limits.model_dump())
    return entry


def _estimate(info: KernelInfo) -> dict[str, int] | str:
    """The kernel's resource estimate (`pynqtorch fit`), or why there is none."""
    from ..hw.fit import estimate_kernel
    from ..hw.hls_source import SourceError

    try:
        return estimate_kernel(info).total.as_dict()
    except (SourceError, ValueError) as e:
        return f"no estimate: {e}"


@app.command("kernels")
def list_kernels(json_out: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Every kernel found (bundled, PYNQTORCH_KERNEL_PATH, add_kernel_path): op, tile, estimated resources."""
    found = sorted(kernels().values(), key=lambda k: (-k.desc.priority, k.name))
    estimates = {k.name: _estimate(k) for k in found}
    if json_out:
        emit_json({"kernels": [_json_entry(k) | {"estimate": estimates[k.name]} for k in found],
                   "errors": list(kernel_errors())})
        return
    t = Table("kernel", "op", "tile m×n×k / aten ops", "runtime dims", "max m×n×k / call", "priority",
              "DSP / BRAM18 / LUT / FF (estimate)", "origin", "folder")
    for k in found:
        dims = ",".join(k.desc.runtime_dims) or "-" if k.desc.op == "gemm" else "-"
        e = estimates[k.name]
        res = e if isinstance(e, str) else " / ".join(f"{v:,}" for v in e.values())
        t.add_row(k.name, k.desc.op, _tile(k), dims, _max(k), str(k.desc.priority), res, k.origin, str(k.folder))
    console.print(t)
    for err in kernel_errors():
        console.print(f"[yellow]broken:[/] {escape(err)}")


@app.command("csim")
def csim(kernel: str = typer.Argument(..., help="Kernel name or folder."),
         timeout: float = typer.Option(600.0, help="Seconds before the testbench is stopped.")) -> None:
    """Compile the kernel's own testbench with g++ and run it; exits with the testbench's exit code."""
    from ..buildcache import BuildError
    from ..targets.base import TargetUnavailable
    from ..targets.csim.build import CsimError, build_testbench

    info = _kernel(kernel)
    try:
        exe = build_testbench(info)
    except (BuildError, CsimError, TargetUnavailable) as e:
        fail(str(e))
    console.print(f"[dim]running {exe}[/]")
    try:
        proc = subprocess.run([str(exe)], check=False, cwd=info.folder, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        fail(f"testbench of {info.name} did not finish within {timeout:g} s", code=124)
    typer.echo(proc.stdout, nl=False)
    typer.echo(proc.stderr, nl=False, err=True)
    code = proc.returncode
    if code < 0:
        console.print(f"[bold red]testbench of {info.name} was killed by {signal.Signals(-code).name}[/]")
        code = 128 - code
    elif code:
        console.print(f"[bold red]testbench of {info.name} failed with exit code {code}[/]")
    raise typer.Exit(code)


@app.command("verify")
def verify(kernel: str = typer.Argument(..., help="Kernel name or folder."),
           trials: int = typer.Option(8, min=0, help="Random trials besides the edge cases."),
           seed: int = typer.Option(0, help="Seed of the random trials."),
           json_out: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Validate the description, build the C simulation and compare it with the golden model."""
    from ..buildcache import BuildError
    from ..targets.base import TargetUnavailable
    from ..targets.csim.build import CsimError
    from ..targets.csim.verify import folder_warnings, run_trials

    info = _kernel(kernel)
    if info.desc.op != "gemm":
        _verify_blocks(info, seed, json_out)
        return
    try:
        results = run_trials(info, trials=trials, seed=seed)
    except (BuildError, CsimError, TargetUnavailable) as e:
        fail(str(e))
    warnings = folder_warnings(info)
    bad = [r for r in results if not r.ok]
    if json_out:
        emit_json({"kernel": info.name, "folder": str(info.folder), "ok": not bad, "warnings": warnings,
                   "trials": [asdict(r) for r in results]})
    else:
        for w in warnings:
            console.print(f"[yellow]warning:[/] {w}")
        t = Table("case", "m×n×k", "mismatches", "max |diff|", "first mismatch \\[i, j]: kernel vs golden",
                  title=f"{info.name}: C simulation vs golden model ({info.folder})")
        for r in results:
            first = "" if r.first is None else escape(f"[{r.first[0]}, {r.first[1]}]: {r.first[2]} vs {r.first[3]}")
            t.add_row(r.case, f"{r.m}x{r.n}x{r.k}", f"[red]{r.mismatches}[/]" if r.mismatches else "0",
                      str(r.max_diff), first)
        console.print(t)
        verdict = (f"[bold red]FAIL[/]: {len(bad)} of {len(results)} trials mismatch" if bad
                   else f"[bold green]PASS[/]: {len(results)} trials bit-exact")
        console.print(verdict)
    if bad:
        raise typer.Exit(1)


def _verify_blocks(info: KernelInfo, seed: int, json_out: bool) -> None:
    """`verify` of a map/rows kernel: C simulation vs torch's op within the description's tolerance."""
    from ..buildcache import BuildError
    from ..targets.base import TargetUnavailable
    from ..targets.csim.build import CsimError
    from ..targets.csim.verify import folder_warnings
    from ..targets.csim.verify_blocks import run_block_trials

    try:
        results = run_block_trials(info, seed=seed)
    except (BuildError, CsimError, TargetUnavailable) as e:
        fail(str(e))
    warnings = folder_warnings(info)
    bad = [r for r in results if not r.ok]
    tol = info.desc.verify.tolerance
    if json_out:
        emit_json({"kernel": info.name, "folder": str(info.folder), "ok": not bad, "warnings": warnings,
                   "tolerance": tol.model_dump(), "trials": [asdict(r) for r in results]})
    else:
        for w in warnings:
            console.print(f"[yellow]warning:[/] {w}")
        t = Table("case", "op", "call", "output", "fails", "max |abs|", "max rel", "max ULP", "mean ULP",
                  "first failure \\[i] x: kernel vs torch",
                  title=f"{info.name}: C simulation vs torch (tolerance |d| <= {tol.abs:g} + {tol.rel:g}·|torch|)")
        for r in results:
            first = "" if r.first is None else escape(f"[{r.first[0]}] {r.first[1]:g}: {r.first[2]:.7g} vs "
                                                      f"{r.first[3]:.7g}")
            t.add_row(r.case, r.op.removeprefix("aten::"), r.sizes, r.output,
                      f"[red]{r.failures}[/]" if r.failures else "0", f"{r.max_abs:.3g}", f"{r.max_rel:.3g}",
                      str(r.max_ulp), f"{r.mean_ulp:.2f}", first)
        console.print(t)
        console.print(f"[bold red]FAIL[/]: {len(bad)} of {len(results)} comparisons out of tolerance" if bad
                      else f"[bold green]PASS[/]: {len(results)} comparisons within tolerance")
    if bad:
        raise typer.Exit(1)


@app.command("perf")
def perf(kernel: str = typer.Argument(..., help="Kernel name or folder."),
         m: int = typer.Option(..., "--m", min=1, help="Rows of A (whole GEMM)."),
         n: int = typer.Option(..., "--n", min=1, help="Columns of B (whole GEMM)."),
         k: int = typer.Option(..., "--k", min=1, help="Inner dimension (whole GEMM)."),
         clock_mhz: float | None = typer.Option(None, "--clock-mhz", help="Kernel clock (default: hls.clock_ns)."),
         host_us: float = typer.Option(0.0, "--host-us", min=0.0, help="Extra host overhead per kernel call, µs."),
         board_host: bool = typer.Option(False, "--board-host",
                                         help="Add the board target's per-call host stages (Cortex-A9 estimate)."),
         json_out: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Predicted cycles per call with the cycle model's terms, and calls and board time for a whole GEMM."""
    from ..hw.perf import BOARD_HOST, gemm_perf

    info = _kernel(kernel)
    if info.desc.op != "gemm":
        fail(f"perf predicts whole GEMMs; {info.name} is a {info.desc.op} kernel whose cycles per call are "
             f"{info.desc.perf.cycles}")
    try:
        p = gemm_perf(info.desc, m, n, k, clock_mhz=clock_mhz, host_us=host_us,
                      host=BOARD_HOST if board_host else None)
    except ValueError as e:
        fail(str(e))
    mhz = p.clock_mhz
    terms = info.desc.perf.expressions()
    if json_out:
        emit_json({"cycles": p.cycles, "breakdown": p.breakdown, "kernel": info.name, "terms": terms,
                   "params": info.desc.perf.params, "clock_mhz": mhz, "m": m, "n": n, "k": k, "calls": p.calls,
                   "kernel_s": p.kernel_s, "host_us": host_us, "host_s": p.host_s, "total_s": p.total_s,
                   "shapes": [asdict(s) | {"cycles": s.cycles} for s in p.shapes]})
        return
    params = ", ".join(f"{k_}={v}" for k_, v in info.desc.perf.params.items())
    console.print(f"{info.name}: cycle model at {mhz:g} MHz" + (f" ({params})" if params else ""))
    t = Table("term", "expression", *[f"{s.m}x{s.n}x{s.k} (x{s.count:,})" for s in p.shapes], "whole GEMM",
              title="cycles per call by term (an estimate)")
    total = p.breakdown
    for term, expr in terms.items():
        t.add_row(term, expr, *[f"{s.breakdown[term]:,}" for s in p.shapes], f"{total[term]:,}")
    t.add_row("[bold]total[/]", "", *[f"[bold]{s.cycles:,}[/]" for s in p.shapes], f"[bold]{p.cycles:,}[/]")
    t.add_row("latency / call", "", *[f"{s.cycles / mhz:,.1f} µs" for s in p.shapes], "")
    console.print(t)
    host = f"{p.host_s * 1e3:,.3f} ms host" + (" (board stages estimate)" if board_host else "")
    console.print(f"GEMM {m}x{k} by {k}x{n}: {p.calls:,} kernel calls, {p.cycles:,} cycles = "
                  f"{p.kernel_s * 1e3:,.3f} ms kernel + {host} = [bold]{p.total_s * 1e3:,.3f} ms[/] predicted "
                  f"board time; {m * n * k / p.cycles:,.1f} MAC/cycle")
