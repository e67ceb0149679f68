"""`pynqtorch fit <overlay|kernel>`: estimated DSP48E1, BRAM18, LUT and FF against the XC7Z020."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..hw.description import DescriptionError
from ..hw.fit import (
    AVAILABLE,
    LIMIT,
    PART,
    KernelFit,
    OverlayFit,
    estimate_kernel,
    estimate_overlay,
    fits,
    report_json,
)
from ..hw.hls_source import SourceError
from ..hw.kernels import KernelInfo, find_kernel, kernels
from ..hw.overlay import OverlayError, OverlayInfo, find_overlay, overlays
from ._app import app, console, emit_json, fail


def _kernel(name: str) -> KernelInfo:
    try:
        return find_kernel(name)
    except KeyError as e:
        fail(e.args[0])
    except DescriptionError as e:
        fail(str(e))


def _estimate(target: str) -> KernelFit | OverlayFit:
    """A kernel (name or folder) or an overlay (name, folder with overlay.json, or a Vivado build's folder
    with only <name>.bit + <name>.hwh: `hw.overlay.find_overlay` reads its IPs from the .hwh)."""
    p = Path(target)
    if (p / "description.json").is_file() or (not p.exists() and target in kernels()):
        return estimate_kernel(_kernel(target))
    return _overlay(find_overlay(target))


def _overlay(info: OverlayInfo) -> OverlayFit:
    """Estimate of an overlay folder (`OverlayInfo.kernels` says which kernel each IP runs)."""
    return estimate_overlay(info.name, [(ip.instance, info.kernels[ip.instance], ip.hp_port) for ip in info.ips])


def overlay_estimates() -> dict[str, dict | str]:
    """`fit --json` of every bundled overlay by name (or why it could not be estimated)."""
    out: dict[str, dict | str] = {}
    for name, info in overlays().items():
        try:
            out[name] = _overlay(info).as_json()
        except (OverlayError, DescriptionError, SourceError, ValueError) as e:
            out[name] = f"no estimate: {e}"
    return out


def _row(t: Table, name: str, res: dict[str, int], rule: str = "", bold: bool = False) -> None:
    cells = [f"{res[r]:,}" for r in AVAILABLE]
    if bold:
        name, cells = f"[bold]{name}[/]", [f"[bold]{c}[/]" for c in cells]
    t.add_row(name, *cells, rule)


def fit_table(est: KernelFit | OverlayFit, detail: bool = True) -> Table:
    """Estimate table: per item (kernel) or per IP (overlay), then the total against the part."""
    title = (f"{'overlay' if isinstance(est, OverlayFit) else 'kernel'} {est.name}: estimated resources on "
             f"{PART} (estimates, not Vivado results)")
    t = Table("part", *AVAILABLE, "rule", title=title)
    if isinstance(est, OverlayFit):
        for inst, k in est.ips.items():
            _row(t, f"{inst} ({k.name})", k.total.as_dict(), "kernel estimate (pynqtorch fit " + k.name + ")")
        for it in est.infrastructure:
            _row(t, it.what, it.res.as_dict(), it.rule)
    elif detail:
        for it in est.items:
            _row(t, it.what, it.res.as_dict(), it.rule)
    used = est.total.as_dict()
    _row(t, "total (estimate)", used, bold=True)
    t.add_row("available", *[f"{v:,}" for v in AVAILABLE.values()], "")
    t.add_row("use", *[f"{100 * used[r] / v:.0f} %" + (" [red]>80[/]" if used[r] > LIMIT * v else "")
                       for r, v in AVAILABLE.items()], f"limit {LIMIT:.0%} of each")
    return t


@app.command("fit")
def fit(target: str = typer.Argument(..., help="Overlay (name or folder, also one holding only .bit + .hwh) or "
                                                "kernel (name or folder)."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Estimated DSP48E1, BRAM18, LUT and FF per kernel or overlay against the XC7Z020; exit 1 if over 80 %."""
    try:
        est = _estimate(target)
    except (OverlayError, DescriptionError, SourceError, ValueError) as e:
        fail(str(e))
    ok = fits(est.total)
    if json_out:
        if isinstance(est, OverlayFit):
            emit_json(est.as_json())
        else:
            emit_json(report_json(est.total, {est.name: est.total.as_dict()}))
    else:
        console.print(fit_table(est))
        for note in est.notes:
            console.print(f"[yellow]note:[/] {note}")
        console.print(("[bold green]fits[/]" if ok else "[bold red]does not fit[/]")
                      + f" (estimate; limit {LIMIT:.0%} of every resource of the {PART})")
    raise typer.Exit(0 if ok else 1)

