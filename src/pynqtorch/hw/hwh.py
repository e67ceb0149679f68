"""Vivado hardware handoffs (`.hwh`): the part, PL clocks and memory-mapped IPs with their register maps.

Registers are read the way pynq reads them: with pynq's own metadata parser (pynqmetadata's
``RuntimeMetadataParser``, whose ``ip_dict[...]["registers"]`` pynq's drivers use) when it is installed,
otherwise from each REGISTER's own PROPERTY elements — never those of its FIELDS, whose ADDRESS_OFFSET is a
bit position. The XML itself is always read here too: it is checked to be a complete handoff (a clear
error naming the file otherwise), and gives the part and the PL clock rates (pynq's parser leaves the
Zynq-7000 rates empty).

Vitis HLS names an IP's AXI-lite registers after the C arguments (`hls_registers`): a pointer ``x`` takes a
64-bit address in ``x_1`` (low word) and ``x_2`` (high word), a scalar ``x`` one register ``x`` (``x_1``,
``x_2``, ... when wider than 32 bits), an argument named like an HDL reserved word gets ``_r`` (``out`` ->
``out_r``), and the control interface is ``s_axi_<bundle>``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# M_AXI_GP0/GP1 of the Zynq-7000 PS7: where the AXI-lite windows of PL IPs live.
PS7_MASTERS = ("M_AXI_GP0", "M_AXI_GP1")
HLS_VLNV_PREFIX = "xilinx.com:hls:"

# Verilog-2001 and VHDL-93 reserved words (lower case): Vitis HLS appends ``_r`` to an argument named so.
_HDL_RESERVED_WORDS = """
abs access after alias all always and architecture array assert assign attribute automatic begin block body
buffer bus case casex casez cell cmos component config configuration constant deassign default defparam design
disable disconnect downto edge else elsif end endcase endconfig endfunction endgenerate endmodule endprimitive
endspecify endtable endtask entity event exit file for force forever fork function generate generic genvar
group guarded highz0 highz1 if ifnone impure in incdir include inertial initial inout input instance integer
is join label large liblist library linkage literal localparam loop macromodule map medium mod module nand
negedge new next nmos nor noshowcancelled not notif0 notif1 null of on open or others out output package
parameter pmos port posedge postponed primitive procedure process pull0 pull1 pulldown pullup pulsestyle_onevent
pulsestyle_ondetect pure range rcmos real realtime record reg register reject release rem repeat report return
rnmos rol ror rpmos rtran rtranif0 rtranif1 scalared select severity shared showcancelled signal signed sla sll
small specify specparam sra srl strong0 strong1 subtype supply0 supply1 table task then time to tran tranif0
tranif1 transport tri tri0 tri1 triand trior trireg type unaffected units unsigned until use uwire variable vectored
wait wand weak0 weak1 when while wire with wor xnor xor
"""
HDL_RESERVED = frozenset(_HDL_RESERVED_WORDS.split())


class HandoffError(ValueError):
    """A `.hwh` that cannot be used; the message names the file and what was expected."""


@dataclass(frozen=True)
class HwhIP:
    """One memory-mapped IP instance of a handoff (keyed like pynq's ``ip_dict``)."""

    name: str
    vlnv: str
    base: int
    range: int
    interface: str
    registers: dict[str, int] = field(default_factory=dict)
    interrupt: bool = False

    @property
    def is_hls(self) -> bool:
        return self.vlnv.startswith(HLS_VLNV_PREFIX)

    @property
    def hls_top(self) -> str | None:
        """The HLS top function an HLS IP was built from (the VLNV's name), else None."""
        return self.vlnv.split(":")[2] if self.is_hls else None


@dataclass(frozen=True)
class Handoff:
    """What a `.hwh` says: the part, the enabled PL clocks and the memory-mapped IPs."""

    path: Path
    design: str
    part: str
    board: str | None
    vivado: str
    pl_clocks_mhz: dict[int, float]
    ips: dict[str, HwhIP]
    parser: str

    def ip(self, name: str) -> HwhIP:
        if name not in self.ips:
            raise HandoffError(f"{self.path}: no IP {name!r}; its memory-mapped IPs are {sorted(self.ips)}")
        return self.ips[name]

    @property
    def hls_ips(self) -> dict[str, HwhIP]:
        return {n: ip for n, ip in self.ips.items() if ip.is_hls}


def hls_name(arg: str) -> str:
    """The name Vitis HLS gives C argument `arg` in RTL and register maps (reserved words get ``_r``)."""
    return f"{arg}_r" if arg.lower() in HDL_RESERVED else arg


def hls_registers(arg: str, pointer: bool, bits: int = 32) -> list[str]:
    """Register names Vitis HLS gives argument `arg`, lowest address first: a pointer's two address words
    ``x_1``/``x_2``; a scalar ``x`` (``x_1``..``x_n`` when wider than 32 bits)."""
    name = hls_name(arg)
    words = 2 if pointer else -(-bits // 32)
    return [name] if words == 1 else [f"{name}_{i}" for i in range(1, words + 1)]


def axi_lite_interface(bundle: str) -> str:
    """The AXI-lite slave interface Vitis HLS makes of s_axilite bundle `bundle`."""
    return f"s_axi_{bundle}"


def _int(text: str | None) -> int:
    if text is None:
        raise ValueError("missing value")
    return int(text, 16 if text.lower().startswith("0x") else 10)


def _root(path: Path) -> ET.Element:
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise HandoffError(f"{path}: no such hardware handoff (Vivado writes <name>.hwh beside <name>.bit)") from None
    except (OSError, ET.ParseError) as e:
        raise HandoffError(f"{path}: not a Vivado hardware handoff (expected complete XML): {e}") from None
    if root.tag != "EDKSYSTEM" or root.find("SYSTEMINFO") is None or root.find("MODULES") is None:
        raise HandoffError(f"{path}: not a Vivado hardware handoff (expected an EDKSYSTEM with SYSTEMINFO and "
                           f"MODULES, found <{root.tag}>)")
    return root


def _part(path: Path, info: ET.Element) -> str:
    try:
        return f"xc{info.attrib['DEVICE']}{info.attrib['PACKAGE']}{info.attrib['SPEEDGRADE']}"
    except KeyError as e:
        raise HandoffError(f"{path}: SYSTEMINFO lacks {e.args[0]} (expected DEVICE, PACKAGE, SPEEDGRADE)") from None


def _pl_clocks(path: Path, modules: ET.Element) -> dict[int, float]:
    """Enabled PL clocks (FCLK0-3) of the PS7 and their actual rates in MHz."""
    ps = next((m for m in modules.iter("MODULE") if m.get("MODTYPE") == "processing_system7"), None)
    if ps is None:
        return {}
    params = {p.get("NAME"): p.get("VALUE") for p in ps.iter("PARAMETER")}
    clocks = {}
    for i in range(4):
        if params.get(f"PCW_FPGA_FCLK{i}_ENABLE") != "1":
            continue
        rate = params.get(f"PCW_ACT_FPGA{i}_PERIPHERAL_FREQMHZ") or params.get(f"PCW_FPGA{i}_PERIPHERAL_FREQMHZ")
        try:
            clocks[i] = float(rate)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise HandoffError(f"{path}: PL clock {i} is enabled but has no rate (PCW_ACT_FPGA{i}_PERIPHERAL_FREQMHZ"
                               f" is {rate!r})") from None
    return clocks


def _xml_ips(path: Path, modules: ET.Element) -> dict[str, HwhIP]:
    """IPs mapped through the PS7's GP masters, their registers from each REGISTER's own properties."""
    by_instance = {m.get("INSTANCE"): m for m in modules.iter("MODULE")}
    ips: dict[str, HwhIP] = {}
    for rng in modules.iter("MEMRANGE"):
        if rng.get("MASTERBUSINTERFACE") not in PS7_MASTERS or rng.get("MEMTYPE") != "REGISTER":
            continue
        inst, intf = rng.get("INSTANCE"), rng.get("SLAVEBUSINTERFACE", "")
        mod = by_instance.get(inst)
        if mod is None:
            raise HandoffError(f"{path}: the address map names IP {inst!r}, which has no MODULE")
        try:
            base, high = _int(rng.get("BASEVALUE")), _int(rng.get("HIGHVALUE"))
        except ValueError:
            raise HandoffError(f"{path}: IP {inst}: base/high address {rng.get('BASEVALUE')!r}/"
                               f"{rng.get('HIGHVALUE')!r} are not numbers") from None
        regs: dict[str, int] = {}
        for block in mod.iter("ADDRESSBLOCK"):
            if block.get("INTERFACE") != intf:
                continue
            for reg in block.iter("REGISTER"):
                own = {p.get("NAME"): p.get("VALUE") for p in reg.findall("PROPERTY")}
                if "ADDRESS_OFFSET" in own:
                    regs[reg.get("NAME", "")] = _int(own["ADDRESS_OFFSET"])
        name = (mod.get("FULLNAME") or f"/{inst}").lstrip("/")
        ips[name] = HwhIP(name, mod.get("VLNV", ""), base, high - base + 1, intf, regs)
    return ips


def _pynq_ips(path: Path) -> dict[str, HwhIP] | None:
    """IPs as pynq's metadata parser sees them, or None when pynq's parser is not installed."""
    try:
        from pynqmetadata.frontends import Metadata
        try:
            from pynqmetadata.views.runtime import RuntimeMetadataParser
        except ImportError:  # pynq 3.1 keeps the runtime view in pynq itself
            from pynq.metadata.runtime_metadata_parser import RuntimeMetadataParser  # type: ignore[no-redef]
    except ImportError:
        return None
    try:
        ip_dict: dict[str, Any] = RuntimeMetadataParser(Metadata(str(path))).ip_dict
    except Exception as e:  # noqa: BLE001 -- the parser raises many kinds on a malformed design
        raise HandoffError(f"{path}: pynq's metadata parser rejects it: {type(e).__name__}: {e}") from None
    ips = {}
    for name, d in ip_dict.items():
        if d.get("phys_addr") is None or d.get("type", "").startswith("xilinx.com:ip:processing_system7"):
            continue
        regs = {r: int(v["address_offset"]) for r, v in (d.get("registers") or {}).items()}
        ips[name] = HwhIP(name, d.get("type", ""), int(d["phys_addr"]), int(d["addr_range"]), d.get("mem_id", ""),
                          regs, "interrupt" in (d.get("interrupts") or {}))
    return ips


def read_hwh(path: str | os.PathLike, use_pynq: bool = True) -> Handoff:
    """Read a `.hwh`; `HandoffError` (naming the file and what was expected) when it is not a usable handoff."""
    path = Path(path)
    root = _root(path)
    info, modules = root.find("SYSTEMINFO"), root.find("MODULES")
    assert info is not None and modules is not None  # checked by _root
    part, clocks = _part(path, info), _pl_clocks(path, modules)
    ips = _pynq_ips(path) if use_pynq else None
    return Handoff(path=path, design=info.get("NAME", path.stem), part=part, board=info.get("BOARD"),
                   vivado=root.get("VIVADOVERSION", ""), pl_clocks_mhz=clocks,
                   ips=ips if ips is not None else _xml_ips(path, modules),
                   parser="pynq" if ips is not None else "xml")
