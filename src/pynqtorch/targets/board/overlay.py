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
from ...hw.vivado import check_build, ip_problems


def check_against_hwh(spec: OverlayInfo, hwh: str | os.PathLike) -> None:
    """Raise `OverlayError` unless every IP of overlay.json is in the .hwh with its kernel's registers where the
    description says (`hw.vivado.ip_problems`: Vitis HLS names, control interface, every offset)."""
    try:
        handoff = read_hwh(hwh)
    except HandoffError as e:
        raise OverlayError(str(e)) from None
    problems = []
    for ip in spec.ips:
        have = handoff.ips.get(ip.instance)
        if have is None:
            problems.append(f"IP {ip.instance} has no register map in the .hwh (IPs: {sorted(handoff.ips)})")
        else:
            problems += ip_problems(handoff, have, spec.kernels[ip.instance])
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
