"""Loading an overlay on a board: cross-checks of the built design against `overlay.json` and the kernel
descriptions, and a fix for pynq's Zynq-7000 clock metadata.

When a `.hwh` is present its register map for each kernel IP is cross-checked against the kernel
description; any disagreement is an error, since programming the wrong offsets would silently compute
garbage. The overlay model itself is `hw.overlay`.
"""

from __future__ import annotations

import os
from typing import Any

from ...hw.hwh import HandoffError, read_hwh
from ...hw.overlay import OverlayError, OverlayInfo
from ...hw.vivado import arg_register, check_build


def hwh_registers(hwh: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Register offsets by name for each memory-mapped IP of a Vivado `.hwh` (read as pynq reads them)."""
    try:
        handoff = read_hwh(hwh)
    except HandoffError as e:
        raise OverlayError(str(e)) from None
    return {name: ip.registers for name, ip in handoff.ips.items() if ip.registers}


def check_against_hwh(spec: OverlayInfo, hwh: str | os.PathLike) -> None:
    """Raise `OverlayError` unless every kernel argument's register sits where the .hwh says it does (under
    its Vitis HLS name: `hw.vivado.arg_register`)."""
    regs = hwh_registers(hwh)
    problems = []
    for ip in spec.ips:
        if ip.instance not in regs:
            problems.append(f"IP {ip.instance} has no register map in the .hwh")
            continue
        have = regs[ip.instance]
        kernel = spec.kernels[ip.instance]
        for arg in kernel.desc.args:
            found = arg_register(have, arg.name, arg.interface == "m_axi")
            if found is None:
                problems.append(f"{ip.instance}: argument {arg.name!r} (description offset {arg.offset}) has no "
                                f"register in the .hwh (registers: {sorted(have)})")
            elif found != arg.offset_int:
                problems.append(f"{ip.instance}: argument {arg.name!r} is at 0x{found:x} in the .hwh but "
                                f"{arg.offset} in {kernel.folder / 'description.json'}")
    if problems:
        raise OverlayError(f"{hwh} disagrees with the kernel descriptions:\n  " + "\n  ".join(problems))


def check_loadable(spec: OverlayInfo) -> None:
    """Raise `OverlayError` naming every problem unless `spec`'s `.bit` + `.hwh` may be downloaded: the build
    matches the kernel descriptions (`hw.vivado.check_build`: part, .bit header, a kernel for every HLS IP,
    every register offset) and, for an overlay.json folder, its IPs sit where overlay.json says."""
    try:
        check_build(spec.bitstream, spec.hwh)
    except HandoffError as e:
        raise OverlayError(str(e)) from None
    check_against_hwh(spec, spec.hwh)


def check_interrupt(ip_dict: dict[str, Any], instance: str, hwh_name: str) -> None:
    """Raise `OverlayError` unless pynq's `ip_dict` has IP `instance`'s ``interrupt`` reaching an interrupt
    controller (what `pynq.Interrupt` needs)."""
    entry = ip_dict.get(instance)
    if entry is None or "interrupt" not in (entry.get("interrupts") or {}):
        raise OverlayError(f"IP {instance}: its `interrupt` is not wired to an AXI interrupt controller in "
                           f"{hwh_name}; use wait='poll'")


def check_ip_dict(spec: OverlayInfo, ip_dict: dict[str, Any]) -> None:
    """Raise `OverlayError` unless pynq's parsed `ip_dict` maps every kernel IP where overlay.json says."""
    problems = []
    for ip in spec.ips:
        entry = ip_dict.get(ip.instance)
        if entry is None:
            problems.append(f"IP {ip.instance} is not in the design pynq loaded (IPs: {sorted(ip_dict)})")
        elif int(entry["phys_addr"]) != ip.base_int:
            problems.append(f"IP {ip.instance} is at 0x{int(entry['phys_addr']):08x} in the .hwh but at "
                            f"0x{ip.base_int:08x} in overlay.json")
    if problems:
        raise OverlayError(f"{spec.hwh} disagrees with {spec.folder / 'overlay.json'}:\n  "
                           + "\n  ".join(problems))


def complete_clock_rates(overlay: Any, spec: OverlayInfo) -> None:
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
            raise OverlayError(f"{spec.hwh}: PL clock {i} is enabled but the .hwh gives no frequency for it")
        clock["frequency"] = float(found)
