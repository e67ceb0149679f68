"""Overlays as the board target sees them: IP instances, their AXI-lite bases and the kernels they run.

An overlay folder holds `overlay.json` (and, once built, `<name>.bit` + `<name>.hwh`). When a `.hwh` is
present its register map for each kernel IP is cross-checked against the kernel description; any
disagreement is an error, since programming the wrong offsets would silently compute garbage.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..flows.overlay import OverlayError, OverlayInfo, overlays
from ..flows.overlay import find_overlay as flows_find_overlay
from ..hw.kernels import KernelInfo, find_kernel
from .board_regs import register_span

__all__ = ["OverlayError", "OverlayIP", "OverlaySpec", "check_against_hwh", "check_ip_dict", "complete_clock_rates",
           "find_overlay", "hwh_registers", "known_overlays"]


@dataclass(frozen=True)
class OverlayIP:
    instance: str
    kernel: KernelInfo
    base: int
    range: int


@dataclass(frozen=True)
class OverlaySpec:
    """An overlay with each IP's kernel description resolved."""

    name: str
    folder: Path
    bitstream: str
    clock_mhz: float
    ips: tuple[OverlayIP, ...]

    @property
    def bit_path(self) -> Path:
        return self.folder / self.bitstream

    @property
    def hwh_path(self) -> Path:
        return self.bit_path.with_suffix(".hwh")


def _resolve(info: OverlayInfo) -> OverlaySpec:
    ips = []
    for i, ip in enumerate(info.spec.ips):
        where = f"{info.folder / 'overlay.json'}: field 'ips[{i}].kernel'"
        try:
            kernel = find_kernel(ip.kernel)
        except KeyError as e:
            raise OverlayError(f"{where}: {e.args[0]}") from None
        if ip.range_int < register_span(kernel.desc):
            raise OverlayError(f"{where}: range {ip.range} cannot hold the registers of {kernel.name}")
        ips.append(OverlayIP(ip.instance, kernel, ip.base_int, ip.range_int))
    return OverlaySpec(info.name, info.folder, info.spec.bitstream, float(info.spec.clock_mhz), tuple(ips))


def known_overlays() -> dict[str, OverlaySpec]:
    """Bundled overlays (`hw/overlay/<name>/overlay.json`) by name."""
    return {name: _resolve(info) for name, info in overlays().items()}


def find_overlay(name_or_path: str | os.PathLike) -> OverlaySpec:
    """An overlay by bundled name, by folder, by overlay.json, or by its .bit/.hwh (overlay.json beside it)."""
    p = Path(name_or_path)
    if p.suffix in (".bit", ".hwh", ".json"):
        p = p.parent
    return _resolve(flows_find_overlay(p if p.is_dir() else name_or_path))


def hwh_registers(hwh: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Register offsets by name for each IP instance in a Vivado `.hwh` (the REGISTER elements of each MODULE)."""
    try:
        root = ET.parse(hwh).getroot()
    except (OSError, ET.ParseError) as e:
        raise OverlayError(f"{hwh}: cannot read hardware handoff: {e}") from None
    out: dict[str, dict[str, int]] = {}
    for module in root.iter("MODULE"):
        regs = {}
        for reg in module.iter("REGISTER"):
            props = {p.get("NAME"): p.get("VALUE") for p in reg.iter("PROPERTY")}
            if "ADDRESS_OFFSET" in props:
                regs[reg.get("NAME")] = int(props["ADDRESS_OFFSET"], 0)
        if regs:
            out[module.get("INSTANCE")] = regs
    return out


def check_against_hwh(spec: OverlaySpec, hwh: str | os.PathLike) -> None:
    """Raise `OverlayError` unless every kernel argument's register sits where the .hwh says it does.

    An HLS pointer argument `x` appears as `x_1`/`x_2` (low/high words; `x` in older tools); a scalar as `x`.
    """
    regs = hwh_registers(hwh)
    problems = []
    for ip in spec.ips:
        if ip.instance not in regs:
            problems.append(f"IP {ip.instance} has no register map in the .hwh")
            continue
        have = regs[ip.instance]
        for arg in ip.kernel.desc.args:
            found = next((have[n] for n in (f"{arg.name}_1", arg.name, f"{arg.name}_V") if n in have), None)
            if found is None:
                problems.append(f"{ip.instance}: argument {arg.name!r} (description offset {arg.offset}) has no "
                                f"register in the .hwh (registers: {sorted(have)})")
            elif found != arg.offset_int:
                problems.append(f"{ip.instance}: argument {arg.name!r} is at 0x{found:x} in the .hwh but "
                                f"{arg.offset} in {ip.kernel.folder / 'description.json'}")
    if problems:
        raise OverlayError(f"{hwh} disagrees with the kernel descriptions:\n  " + "\n  ".join(problems))


def check_ip_dict(spec: OverlaySpec, ip_dict: dict[str, Any]) -> None:
    """Raise `OverlayError` unless pynq's parsed `ip_dict` maps every kernel IP where overlay.json says."""
    problems = []
    for ip in spec.ips:
        entry = ip_dict.get(ip.instance)
        if entry is None:
            problems.append(f"IP {ip.instance} is not in the design pynq loaded (IPs: {sorted(ip_dict)})")
        elif int(entry["phys_addr"]) != ip.base:
            problems.append(f"IP {ip.instance} is at 0x{int(entry['phys_addr']):08x} in the .hwh but at "
                            f"0x{ip.base:08x} in overlay.json")
    if problems:
        raise OverlayError(f"{spec.hwh_path} disagrees with {spec.folder / 'overlay.json'}:\n  "
                           + "\n  ".join(problems))


def complete_clock_rates(overlay: Any, spec: OverlaySpec) -> None:
    """Fill the rate of each enabled Zynq-7000 PL clock that pynq's parser left empty.

    pynq 4.0 programs PL clocks by frequency, but its metadata parser reads the rate from the UltraScale+
    parameter name only, so every Zynq-7000 .hwh gives ``frequency=None`` and the download fails. The
    rate is in the PS7's ``PCW_ACT_FPGA<i>_PERIPHERAL_FREQMHZ`` parameter.
    """
    params = getattr(getattr(getattr(overlay, "parser", None), "ps", None), "parameters", {})
    for i, clock in overlay.clock_dict.items():
        if not clock.get("enable") or clock.get("frequency") is not None:
            continue
        found = next((params[n].value for n in (f"PCW_ACT_FPGA{i}_PERIPHERAL_FREQMHZ",
                                                f"PCW_FPGA{i}_PERIPHERAL_FREQMHZ") if n in params), None)
        if found is None:
            raise OverlayError(f"{spec.hwh_path}: PL clock {i} is enabled but the .hwh gives no frequency for it")
        clock["frequency"] = float(found)
