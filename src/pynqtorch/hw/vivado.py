"""What a Vivado build of an overlay holds (`<name>.bit` + `<name>.hwh`), checked against the kernel descriptions.

Each HLS IP of the `.hwh` runs the kernel whose description has the IP's top function (the VLNV's name,
``xilinx.com:hls:<top>:1.0``); its base address, window and interrupt wiring come from the `.hwh`, its
register offsets must match the description. The `.bit` header (read with pynq's own parser) must name the
same part; its body is not read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .hwh import Handoff, HandoffError, HwhIP, axi_lite_interface, hls_name, hls_registers, read_hwh
from .kernels import KernelInfo, kernels
from .registers import register_span

BOARD_PART = "xc7z020clg400-1"  # PYNQ-Z2


@dataclass(frozen=True)
class KernelIP:
    """An HLS IP of a built overlay with the kernel it runs."""

    instance: str
    kernel: KernelInfo
    base: int
    range: int
    interrupt: bool


def arg_register(registers: dict[str, int], name: str, pointer: bool) -> int | None:
    """Offset of argument `name` in an IP's register map under its Vitis HLS name (``x_1``, ``out_r_1``, ``x``)
    or as older Vivado HLS named it (``x``, ``x_V``); None when absent."""
    for candidate in dict.fromkeys((hls_registers(name, pointer)[0], hls_name(name), name, f"{name}_V")):
        if candidate in registers:
            return registers[candidate]
    return None


def kernel_for(ip: HwhIP) -> KernelInfo | None:
    """The kernel on the kernel path whose top function built HLS IP `ip` (None when none has it)."""
    found = [k for k in kernels().values() if k.desc.top == ip.hls_top]
    return next((k for k in found if k.name == ip.hls_top), found[0] if found else None)


def ip_problems(handoff: Handoff, ip: HwhIP, kernel: KernelInfo) -> list[str]:
    """Every disagreement between IP `ip` of `handoff` and `kernel`'s description (IP, argument, both offsets)."""
    desc, desc_file = kernel.desc, kernel.folder / "description.json"
    problems = []
    want_intf = axi_lite_interface(desc.control.bundle)
    if ip.interface != want_intf:
        problems.append(f"IP {ip.name}: control interface {ip.interface!r} in {handoff.path.name} but "
                        f"{want_intf!r} (bundle {desc.control.bundle!r}) in {desc_file}")
    ctrl = ip.registers.get("CTRL")
    if ctrl != desc.control.ap_ctrl_int:
        problems.append(f"IP {ip.name}: CTRL is at {'nowhere' if ctrl is None else hex(ctrl)} in "
                        f"{handoff.path.name} but {desc.control.ap_ctrl} in {desc_file}")
    for arg in desc.args:
        found = arg_register(ip.registers, arg.name, arg.interface == "m_axi")
        if found is None:
            problems.append(f"IP {ip.name}: argument {arg.name!r} ({hls_registers(arg.name, arg.interface == 'm_axi')[0]}"
                            f") has no register in {handoff.path.name}, at {arg.offset} in {desc_file} "
                            f"(registers: {sorted(ip.registers)})")
        elif found != arg.offset_int:
            problems.append(f"IP {ip.name}: argument {arg.name!r} is at 0x{found:x} in {handoff.path.name} but "
                            f"{arg.offset} in {desc_file}")
    if ip.range < register_span(desc):
        problems.append(f"IP {ip.name}: its window of 0x{ip.range:x} bytes cannot hold the registers of "
                        f"{kernel.name} (0x{register_span(desc):x})")
    return problems


def handoff_problems(handoff: Handoff) -> tuple[list[KernelIP], list[str]]:
    """The kernel IPs of `handoff` and every problem found: the part, the PL clock, each HLS IP's kernel and
    registers."""
    problems = []
    if handoff.part != BOARD_PART:
        problems.append(f"{handoff.path.name} is built for part {handoff.part}, expected {BOARD_PART} (PYNQ-Z2)")
    if not handoff.pl_clocks_mhz:
        problems.append(f"{handoff.path.name} enables no PL clock (FCLK0-3) to run the kernels")
    ips = []
    for name, ip in sorted(handoff.hls_ips.items()):
        kernel = kernel_for(ip)
        if kernel is None:
            problems.append(f"IP {name} ({ip.vlnv}): no kernel description with top function {ip.hls_top!r} on "
                            f"the kernel path (PYNQTORCH_KERNEL_PATH, add_kernel_path, bundled: "
                            f"{sorted(k.desc.top for k in kernels().values())})")
            continue
        found = ip_problems(handoff, ip, kernel)
        problems += found
        if not found:
            ips.append(KernelIP(name, kernel, ip.base, ip.range, ip.interrupt))
    if not handoff.hls_ips:
        problems.append(f"{handoff.path.name} has no HLS IP (xilinx.com:hls:*); memory-mapped IPs: "
                        f"{sorted(handoff.ips) or 'none'}")
    return ips, problems


def bit_header(path: str | os.PathLike) -> dict[str, str]:
    """The header of a Xilinx `.bit` (design, part, date, time, version) as pynq parses it; `HandoffError`
    naming the file when it is not a complete bitstream."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise HandoffError(f"{path}: cannot read the bitstream: {e.strerror}") from None
    try:
        from pynq.pl_server.embedded_device import parse_bit_header
    except ImportError:
        raise HandoffError(f"{path}: checking a bitstream needs pynq (pip install 'pynqtorch[board]')") from None
    try:
        header = parse_bit_header(data)
    except Exception as e:  # noqa: BLE001 -- pynq's parser raises RuntimeError, struct.error, IndexError, ...
        raise HandoffError(f"{path}: not a complete Xilinx bitstream (expected a .bit header whose length field "
                           f"matches the file): {type(e).__name__}: {e}") from None
    return {k: v for k, v in header.items() if k != "data"}


def build_problems(bit: str | os.PathLike, hwh: str | os.PathLike | None = None
                   ) -> tuple[Handoff, list[KernelIP], list[str]]:
    """Read a Vivado build (`bit` and its `.hwh`, by default beside it): the handoff, its kernel IPs and every
    problem found; `HandoffError` when a file is missing or unreadable."""
    bit = Path(bit)
    hwh = Path(hwh) if hwh is not None else bit.with_suffix(".hwh")
    if not hwh.is_file():
        raise HandoffError(f"{bit}: no hardware handoff {hwh.name} beside it (Vivado writes <name>.hwh with "
                           "<name>.bit; pynq needs both)")
    handoff = read_hwh(hwh)
    header = bit_header(bit)
    ips, problems = handoff_problems(handoff)
    part = header.get("part", "")
    if not part or f"xc{part}" != handoff.part[: len(part) + 2]:
        problems.append(f"{bit.name} is for part {part!r} but {hwh.name} for {handoff.part}")
    return handoff, ips, problems


def check_build(bit: str | os.PathLike, hwh: str | os.PathLike | None = None) -> tuple[Handoff, list[KernelIP]]:
    """`build_problems`, raising `HandoffError` naming every problem; nothing is downloaded."""
    handoff, ips, problems = build_problems(bit, hwh)
    if problems:
        raise HandoffError(f"{Path(bit).parent}: the Vivado build does not match the kernel descriptions:\n  "
                           + "\n  ".join(problems))
    return handoff, ips
