"""Overlays as the board target sees them: IP instances, their AXI-lite bases and the kernels they run.

An overlay folder holds `overlay.json` (and, once built, `<name>.bit` + `<name>.hwh`). When a `.hwh` is
present its register map for each kernel IP is cross-checked against the kernel description; any
disagreement is an error, since programming the wrong offsets would silently compute garbage.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from ..hw.kernels import KernelInfo, find_kernel, hw_root
from .board_regs import register_span


class OverlayError(ValueError):
    """An overlay that is missing, malformed, or disagrees with its kernels' descriptions."""


@dataclass(frozen=True)
class OverlayIP:
    instance: str
    kernel: KernelInfo
    base: int
    range: int


@dataclass(frozen=True)
class OverlaySpec:
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


def _int(value: object, where: str) -> int:
    try:
        return int(value, 0) if isinstance(value, str) else int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise OverlayError(f"{where}: {value!r} is not an integer or hex string") from None


def load_overlay_spec(path: str | os.PathLike) -> OverlaySpec:
    """Read `overlay.json` (or the folder holding it), resolving each IP's kernel description."""
    path = Path(path)
    file = path / "overlay.json" if path.is_dir() else path
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        raise OverlayError(f"{file}: no such file") from None
    except json.JSONDecodeError as e:
        raise OverlayError(f"{file}: invalid JSON at line {e.lineno}: {e.msg}") from None
    for key in ("name", "bitstream", "ips"):
        if key not in raw:
            raise OverlayError(f"{file}: field '{key}' is missing")
    ips = []
    for i, ip in enumerate(raw["ips"]):
        where = f"{file}: ips[{i}]"
        for key in ("instance", "kernel", "base"):
            if key not in ip:
                raise OverlayError(f"{where}: field '{key}' is missing")
        try:
            kernel = find_kernel(ip["kernel"])
        except KeyError as e:
            raise OverlayError(f"{where}.kernel: {e.args[0]}") from None
        span = _int(ip.get("range", register_span(kernel.desc)), f"{where}.range")
        if span < register_span(kernel.desc):
            raise OverlayError(f"{where}.range: 0x{span:x} bytes cannot hold the registers of {kernel.name} "
                               f"(needs 0x{register_span(kernel.desc):x})")
        ips.append(OverlayIP(ip["instance"], kernel, _int(ip["base"], f"{where}.base"), span))
    if not ips:
        raise OverlayError(f"{file}: field 'ips' lists no kernel IPs")
    return OverlaySpec(raw["name"], file.parent.resolve(), raw["bitstream"], float(raw.get("clock_mhz", 100)),
                       tuple(ips))


def known_overlays() -> dict[str, OverlaySpec]:
    """Bundled overlays (`hw/overlay/<name>/overlay.json`) by name."""
    root = hw_root() / "overlay"
    if not root.is_dir():
        return {}
    return {s.name: s for s in (load_overlay_spec(p) for p in sorted(root.glob("*/overlay.json")))}


def find_overlay(name_or_path: str | os.PathLike) -> OverlaySpec:
    """An overlay by bundled name, by folder, by overlay.json, or by its .bit/.hwh (overlay.json beside it)."""
    p = Path(name_or_path)
    if p.suffix in (".bit", ".hwh"):
        p = p.parent
    if p.is_dir() or p.suffix == ".json":
        return load_overlay_spec(p)
    known = known_overlays()
    if str(name_or_path) not in known:
        raise OverlayError(f"unknown overlay {str(name_or_path)!r}; bundled: {sorted(known)} "
                           "(or give a folder holding overlay.json)")
    return known[str(name_or_path)]


def hwh_registers(hwh: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Register offsets by name for each IP instance in a Vivado `.hwh` (from its MEMORYMAP-less REGISTERS)."""
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
