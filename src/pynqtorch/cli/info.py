"""`pynqtorch info`: versions, devices, targets and why unavailable ones are, kernels found."""

from __future__ import annotations

import importlib.metadata as md
import platform

import typer
from rich.markup import escape
from rich.table import Table

from ._app import app, console, emit_json, fail


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def collect() -> dict:
    """Everything `info` shows, as plain data."""
    import torch

    import pynqtorch

    from .. import hostops
    from ..hw.kernels import kernel_errors, kernels
    from ..targets.registry import available_targets, current, env_target
    from .fit import overlay_estimates

    return {
        "versions": {"pynqtorch": pynqtorch.__version__, "torch": torch.__version__, "pynq": _version("pynq"),
                     "hls4ml": _version("hls4ml"), "python": platform.python_version(),
                     "machine": platform.machine()},
        "devices": {"count": torch.zynq.device_count(), "current": torch.zynq.current_device()},
        "active_target": cur.name if (cur := current()) is not None else env_target(),
        "targets": available_targets(),
        "host_passes": hostops.status(),
        "kernels": {k.name: {"origin": k.origin, "folder": str(k.folder), "priority": k.desc.priority}
                    for k in kernels().values()},
        "kernel_errors": list(kernel_errors()),
        "overlay_fit": overlay_estimates(),
    }


@app.command()
def info(json_out: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Versions, zynq devices, active target, available targets (and why not), kernels."""
    try:
        data = collect()
    except ValueError as e:
        fail(str(e))
    if json_out:
        emit_json(data)
        return
    v = data["versions"]
    console.print(f"pynqtorch {v['pynqtorch']} · torch {v['torch']} · pynq {v['pynq'] or 'not installed'} · "
                  f"hls4ml {v['hls4ml'] or 'not installed'} · Python {v['python']} ({v['machine']})")
    console.print(f"zynq devices: {data['devices']['count']} (current zynq:{data['devices']['current']}); "
                  f"active target: [bold]{data['active_target']}[/]; quantize/dequantize: {data['host_passes']}")
    t = Table("target", "available", "why not")
    for name, reason in data["targets"].items():
        t.add_row(name, "yes" if reason is None else "no", reason or "")
    console.print(t)
    k = Table("kernel", "origin", "priority", "folder")
    for name, d in data["kernels"].items():
        k.add_row(name, d["origin"], str(d["priority"]), d["folder"])
    console.print(k)
    for err in data["kernel_errors"]:
        console.print(f"[yellow]broken:[/] {escape(err)}")
    o = Table("overlay", "DSP", "BRAM18", "LUT", "FF", "fits", title="bundled overlays on the XC7Z020 "
              "(estimates: pynqtorch fit <overlay>; limit 80 % of each)")
    for name, est in data["overlay_fit"].items():
        if isinstance(est, str):
            o.add_row(name, est, "", "", "", "?")
            continue
        r = est["resources"]
        o.add_row(name, *[f"{r[x]['used']:,} ({100 * r[x]['used'] / r[x]['available']:.0f} %)" for x in r],
                  "yes" if est["fits"] else "[red]no[/]")
    console.print(o)
