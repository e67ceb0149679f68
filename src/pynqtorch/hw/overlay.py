"""The overlay model: `overlay.json` (which kernel IPs a bitstream holds, where their registers live) and
discovery of overlay folders. One model for the hardware flows, the board target and the virtual board.

An overlay folder `hw/overlay/<name>/` holds `overlay.json`, `block_design.tcl` and `run_vivado.tcl` (the
two Tcl files are rendered from the same `overlay.json` by `flows.overlay.render_overlay`), and after a
Vivado build `<name>.bit` / `<name>.hwh`. A folder of just what Vivado writes (`<name>.bit` + `<name>.hwh`,
no `overlay.json`) is an overlay too: its IPs, addresses and clock come from the `.hwh`, the kernel each HLS
IP runs from its VLNV (`hw.vivado`). Errors name the file and the field.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .jsonspec import CIdentifier, load_spec
from .kernels import KernelInfo, find_kernel, hw_root
from .registers import register_span
from .vivado import check_build

# The PS7 M_AXI_GP0 window in which AXI-lite control registers of PL IPs are mapped.
GP0_LOW, GP0_HIGH = 0x4000_0000, 0x7FFF_FFFF
HP_PORTS = ("HP0", "HP1", "HP2", "HP3")


class OverlayError(ValueError):
    """An `overlay.json` that is missing, malformed or inconsistent; the message names file and field."""


def _hex(v: str, what: str) -> int:
    try:
        return int(v, 16)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {v!r} is not a hex number such as '0x40000000'") from None


class OverlayIP(BaseModel):
    """One kernel IP instance in the block design."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance: CIdentifier
    kernel: CIdentifier
    base: str = Field(description="AXI-lite base address (hex) in the GP0 window")
    range: str = Field(description="size of the AXI-lite address window (hex, a power of two >= 4 KiB)")
    # The HP port the IP's masters use; None for an overlay read from a Vivado build (wired in its design).
    hp_port: Literal["HP0", "HP1", "HP2", "HP3"] | None

    @field_validator("base")
    @classmethod
    def _base(cls, v: str) -> str:
        b = _hex(v, "base")
        if not GP0_LOW <= b <= GP0_HIGH:
            raise ValueError(f"base {v} is outside the M_AXI_GP0 window 0x40000000-0x7FFFFFFF")
        return v

    @field_validator("range")
    @classmethod
    def _range(cls, v: str) -> str:
        r = _hex(v, "range")
        if r < 0x1000 or r & (r - 1):
            raise ValueError(f"range {v} is not a power of two of at least 0x1000")
        return v

    @model_validator(mode="after")
    def _aligned(self) -> OverlayIP:
        if self.base_int % self.range_int:
            raise ValueError(f"base {self.base} is not aligned to its range {self.range}")
        if self.base_int + self.range_int - 1 > GP0_HIGH:
            raise ValueError(f"base {self.base} + range {self.range} runs past the M_AXI_GP0 window")
        return self

    @property
    def base_int(self) -> int:
        return int(self.base, 16)

    @property
    def range_int(self) -> int:
        return int(self.range, 16)


class Overlay(BaseModel):
    """A validated `overlay.json`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: CIdentifier
    board: Literal["pynq-z2"] = "pynq-z2"
    part: Literal["xc7z020clg400-1"] = "xc7z020clg400-1"
    bitstream: str
    clock_mhz: int = Field(100, gt=0, le=250)
    ips: list[OverlayIP] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Overlay:
        if self.bitstream != f"{self.name}.bit":
            raise ValueError(f"bitstream must be '{self.name}.bit' (what run_vivado.tcl writes), got {self.bitstream!r}")
        insts = [ip.instance for ip in self.ips]
        if len(set(insts)) != len(insts):
            raise ValueError(f"ips: duplicate instance names in {insts}")
        spans = sorted((ip.base_int, ip.base_int + ip.range_int, ip.instance) for ip in self.ips)
        for (_, end, a), (start, _, b) in itertools.pairwise(spans):
            if start < end:
                raise ValueError(f"ips: address windows of {a} and {b} overlap")
        return self

    def ip(self, instance: str) -> OverlayIP:
        for ip in self.ips:
            if ip.instance == instance:
                return ip
        raise KeyError(f"overlay {self.name} has no IP instance {instance!r}; it has {[i.instance for i in self.ips]}")


@dataclass(frozen=True)
class OverlayInfo:
    """An overlay folder with its validated `overlay.json`."""

    spec: Overlay
    folder: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ips(self) -> list[OverlayIP]:
        return self.spec.ips

    @property
    def bitstream(self) -> Path:
        """Where the bitstream is (or will be, after `pynqtorch vivado`)."""
        return self.folder / self.spec.bitstream

    @property
    def hwh(self) -> Path:
        return self.bitstream.with_suffix(".hwh")

    @cached_property
    def kernels(self) -> dict[str, KernelInfo]:
        """The kernel each IP instance runs, by instance; `OverlayError` if one is unknown or its register
        window cannot hold the kernel's registers."""
        found = {}
        for i, ip in enumerate(self.spec.ips):
            where = f"{self.folder / 'overlay.json'}: field 'ips[{i}].kernel'"
            try:
                kernel = find_kernel(ip.kernel)
            except KeyError as e:
                raise OverlayError(f"{where}: {e.args[0]}") from None
            if ip.range_int < register_span(kernel.desc):
                raise OverlayError(f"{where}: range {ip.range} cannot hold the registers of {kernel.name}")
            found[ip.instance] = kernel
        return found


def load_overlay(path: str | os.PathLike) -> Overlay:
    """Read and validate an `overlay.json` (or an overlay folder), raising `OverlayError` naming file and field."""
    path = Path(path)
    if path.is_dir():
        path = path / "overlay.json"
    spec = load_spec(path, Overlay, OverlayError)
    if path.parent.name != spec.name:
        raise OverlayError(f"{path}: field 'name': {spec.name!r} differs from its folder name {path.parent.name!r}")
    return spec


def overlays(root: str | os.PathLike | None = None) -> dict[str, OverlayInfo]:
    """Overlay folders under `root` (default: the bundled `hw/overlay`) by name; invalid ones raise."""
    base = Path(root) if root is not None else hw_root() / "overlay"
    found: dict[str, OverlayInfo] = {}
    if base.is_dir():
        for folder in sorted(p for p in base.iterdir() if (p / "overlay.json").is_file()):
            spec = load_overlay(folder / "overlay.json")
            found[spec.name] = OverlayInfo(spec, folder.resolve())
    return found


def overlay_from_build(bit: str | os.PathLike) -> OverlayInfo:
    """The overlay a Vivado build is (`bit` and the `.hwh` beside it), checked against the kernel descriptions;
    `OverlayError` naming the files and every problem."""
    bit = Path(bit)
    try:
        handoff, ips = check_build(bit)
    except ValueError as e:  # HandoffError
        raise OverlayError(str(e)) from None
    clock = handoff.pl_clocks_mhz.get(0, min(handoff.pl_clocks_mhz.values()))
    try:
        spec = Overlay(name=bit.stem, bitstream=bit.name, clock_mhz=round(clock),
                       ips=[OverlayIP(instance=ip.instance, kernel=ip.kernel.name, base=f"0x{ip.base:08X}",
                                      range=f"0x{ip.range:X}", hp_port=None) for ip in ips])
    except ValueError as e:  # pydantic's ValidationError
        raise OverlayError(f"{bit}: the Vivado build cannot be used as an overlay: {e}") from None
    return OverlayInfo(spec, bit.parent.resolve())


def find_overlay(name_or_path: str | os.PathLike) -> OverlayInfo:
    """A bundled overlay by name, or any overlay by folder, by `overlay.json` or by its .bit/.hwh; a folder (or a
    .bit) without `overlay.json` is read from its Vivado build (`overlay_from_build`)."""
    p = Path(name_or_path)
    build = p.with_suffix(".bit") if p.suffix in (".bit", ".hwh") else None
    if p.suffix in (".bit", ".hwh", ".json"):
        p = p.parent
    if (p / "overlay.json").is_file():
        return OverlayInfo(load_overlay(p / "overlay.json"), p.resolve())
    if build is not None:
        if not build.is_file():
            raise OverlayError(f"{build}: no such bitstream (Vivado writes <name>.bit beside <name>.hwh)")
        return overlay_from_build(build)
    if p.is_dir():
        bits = sorted(p.glob("*.bit"))
        if len(bits) == 1:
            return overlay_from_build(bits[0])
        hwhs = sorted(h.name for h in p.glob("*.hwh"))
        raise OverlayError(f"{p}: not an overlay folder: expected overlay.json or one <name>.bit with its <name>.hwh, "
                           f"found bitstreams {[b.name for b in bits]} and handoffs {hwhs}"
                           + (" (pass the .bit to choose)" if len(bits) > 1 else ""))
    found = overlays()
    if str(name_or_path) not in found:
        raise OverlayError(f"unknown overlay {str(name_or_path)!r} (not a folder with overlay.json or a Vivado "
                           f"build, nor a bundled overlay; bundled: {sorted(found)})")
    return found[str(name_or_path)]
