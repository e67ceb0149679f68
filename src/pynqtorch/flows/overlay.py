"""Rendering overlay folders: a default overlay for a list of kernels, and the `overlay.json`,
`block_design.tcl` and `run_vivado.tcl` of an overlay (the model itself is `hw.overlay`)."""

from __future__ import annotations

import json
from importlib import resources

from ..hw.overlay import HP_PORTS, Overlay, OverlayError, OverlayIP

DEFAULT_BASE, DEFAULT_RANGE = 0x4000_0000, 0x1_0000


def default_overlay(name: str, kernels: list[str], clock_mhz: int = 100) -> Overlay:
    """An overlay with one IP per kernel: 64 KiB register windows from 0x40000000, HP ports round robin."""
    ips = []
    seen: dict[str, int] = {}
    for i, kernel in enumerate(kernels):
        idx = seen.get(kernel, 0)
        seen[kernel] = idx + 1
        ips.append(OverlayIP(instance=f"{kernel}_{idx}", kernel=kernel,
                             base=f"0x{DEFAULT_BASE + i * DEFAULT_RANGE:08X}", range=f"0x{DEFAULT_RANGE:X}",
                             hp_port=HP_PORTS[i % len(HP_PORTS)]))
    return Overlay(name=name, bitstream=f"{name}.bit", clock_mhz=clock_mhz, ips=ips)


def overlay_json(spec: Overlay) -> str:
    """The `overlay.json` text of `spec`."""
    return json.dumps(spec.model_dump(mode="json"), indent=2) + "\n"


def _template(name: str) -> str:
    return resources.files("pynqtorch.flows").joinpath("templates", "overlay", name).read_text()


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def render_overlay(spec: Overlay) -> dict[str, str]:
    """The files of an overlay folder (`overlay.json`, `block_design.tcl`, `run_vivado.tcl`) for `spec`."""
    unwired = [ip.instance for ip in spec.ips if ip.hp_port is None]
    if unwired:
        raise OverlayError(f"overlay {spec.name}: IPs {unwired} have no hp_port; the block design needs one "
                           f"of {list(HP_PORTS)} for each")
    rows = "\n".join(f"    {{{ip.instance} {ip.kernel} {ip.base} {ip.range} {ip.hp_port}}}" for ip in spec.ips)
    clock = str(spec.clock_mhz)
    kernels = " ".join(dict.fromkeys(ip.kernel for ip in spec.ips))
    values = {"NAME": spec.name, "CLOCK_MHZ": clock, "IPS": rows, "PART": spec.part, "KERNELS": kernels}
    return {
        "overlay.json": overlay_json(spec),
        "block_design.tcl": _fill(_template("block_design.tcl"), values),
        "run_vivado.tcl": _fill(_template("run_vivado.tcl"), values),
    }
