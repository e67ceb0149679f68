"""`pynqtorch overlay check`: an overlay (a Vivado build, an overlay.json folder, or both) against the kernel
descriptions. Exit 0 when consistent, 1 naming every mismatch, 2 for user mistakes (nothing to check,
unreadable files)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from ._app import app, console, err_console, fail

if TYPE_CHECKING:
    from ..hw.hwh import Handoff
    from ..hw.overlay import OverlayInfo

overlay_app = typer.Typer(help="Overlays: check a build or overlay.json against the kernel descriptions.",
                          no_args_is_help=True)
app.add_typer(overlay_app, name="overlay")


def _locate(target: str) -> tuple[Path, Path | None]:
    """The folder of `target` (a folder, one of its files, or a bundled name) and the .bit it names, if any."""
    from ..hw.overlay import overlays

    p = Path(target)
    if not p.exists():
        bundled = overlays()
        if target not in bundled:
            fail(f"{target}: no such overlay folder, file or bundled overlay (bundled: {sorted(bundled)})")
        p = bundled[target].folder
    if p.suffix in (".bit", ".hwh"):
        return p.parent, p.with_suffix(".bit")
    return (p.parent if p.is_file() else p), None


@overlay_app.command("check")
def check(target: str = typer.Argument(..., help="overlay folder, its .bit/.hwh/overlay.json, or a bundled name")
          ) -> None:
    """Check an overlay against the kernel descriptions: register offsets, windows, a kernel for every HLS IP,
    the part and the clock; and overlay.json against its build when both exist."""
    from ..hw.hwh import HandoffError
    from ..hw.overlay import OverlayError, find_overlay
    from ..hw.vivado import build_problems

    folder, bit = _locate(target)
    js = folder / "overlay.json" if (folder / "overlay.json").is_file() else None
    problems: list[str] = []
    info = None
    if js is not None:
        try:
            info = find_overlay(js)
            _ = info.kernels  # resolves every IP's kernel
            bit = bit or (info.bitstream if info.bitstream.is_file() else None)
        except OverlayError as e:
            problems.append(str(e))
    if bit is None and js is None:
        bits = sorted(folder.glob("*.bit"))
        if len(bits) != 1:
            fail(f"{folder}: nothing to check: expected overlay.json or one Vivado build (<name>.bit + <name>.hwh),"
                 f" found bitstreams {[b.name for b in bits]}")
        bit = bits[0]
    if bit is not None:
        try:
            handoff, ips, found = build_problems(bit)
        except HandoffError as e:
            fail(str(e))
        problems += found
        table = Table(title=f"{bit.name} + {bit.with_suffix('.hwh').name}: part {handoff.part}, Vivado "
                            f"{handoff.vivado}, PL clocks {handoff.pl_clocks_mhz or 'none'} MHz")
        for col in ("IP", "VLNV", "base", "window", "kernel", "interrupt"):
            table.add_column(col)
        kernel_of = {ip.instance: ip.kernel.name for ip in ips}
        for name, ip in sorted(handoff.ips.items()):
            table.add_row(name, ip.vlnv, f"0x{ip.base:08X}", f"0x{ip.range:X}",
                          kernel_of.get(name, "-" if not ip.is_hls else "[red]none[/]"), "yes" if ip.interrupt else "")
        console.print(table)
        if info is not None and js is not None:
            problems += _json_vs_build(info, handoff, js)
    elif info is not None:
        console.print(f"{js}: no build yet ({info.bitstream.name} + {info.hwh.name}); checked overlay.json only")
    if problems:
        err_console.print(f"[bold red]{len(problems)} problem(s):[/]")
        for p in problems:
            err_console.print(f"  - {p}", highlight=False, markup=False)
        raise typer.Exit(1)
    console.print("[green]consistent[/]: " + ("every HLS IP's registers match its kernel description" if bit else
                                                "every IP's kernel and window resolve"))


def _json_vs_build(info: OverlayInfo, handoff: Handoff, js: Path) -> list[str]:
    """Where overlay.json and the .hwh disagree: IPs, base addresses, windows, kernels, clock."""
    from ..hw.vivado import kernel_for

    out = []
    for ip in info.ips:
        have = handoff.ips.get(ip.instance)
        if have is None:
            out.append(f"IP {ip.instance} of {js} is not in {handoff.path.name} (IPs: {sorted(handoff.ips)})")
            continue
        if (have.base, have.range) != (ip.base_int, ip.range_int):
            out.append(f"IP {ip.instance}: at 0x{have.base:08X} (window 0x{have.range:X}) in {handoff.path.name} but "
                       f"{ip.base} (window {ip.range}) in {js}")
        kernel = kernel_for(have)
        if kernel is not None and kernel.name != ip.kernel:
            out.append(f"IP {ip.instance}: runs {kernel.name} by its VLNV {have.vlnv} in {handoff.path.name} but "
                       f"{ip.kernel} in {js}")
    clock = handoff.pl_clocks_mhz.get(0)
    if clock is not None and abs(clock - info.spec.clock_mhz) > 0.01 * info.spec.clock_mhz:
        out.append(f"PL clock 0 is {clock:g} MHz in {handoff.path.name} but clock_mhz {info.spec.clock_mhz} in {js}")
    return out
