"""Resource estimates (DSP48E1, BRAM18, LUT, FF) of kernels and overlays against the XC7Z020, before Vivado.

Nothing here runs Vitis HLS or Vivado: every figure is an *estimate* from the kernel description and its
HLS C++ (read by `hls_source`), with the rules of docs/fit.md. Each line of an estimate says which rule
gave it, so a reader can check the arithmetic. An overlay adds the block design's infrastructure: the PS7
(hard silicon), a reset block, the AXI interconnect of the control path and one SmartConnect per HP port.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .hls_source import Array, FloatOp, Function, Product, Source, read_source, unrolled_copies
from .kernels import KernelInfo

PART = "xc7z020clg400-1"
AVAILABLE = {"DSP": 220, "BRAM18": 280, "LUT": 53_200, "FF": 106_400}
LIMIT = 0.8  # keep every resource at or under 80 % (routing and timing closure)

# Storage: a bank of at most this many bits goes to distributed RAM (LUTRAM) unless BIND_STORAGE says.
LUTRAM_MAX_BITS = 1024
# BRAM18 aspect ratios in simple dual-port mode (depth, width); 512x36 needs SDP, which ram_2p is.
BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
# Without BIND_OP, a multiplier whose operands are both at most this wide is built from LUTs.
AUTO_FABRIC_MAX_BITS = 10
# Vitis HLS m_axi defaults (UG1399, INTERFACE pragma).
MAXI_DEFAULTS = {"max_read_burst_length": 16, "max_write_burst_length": 16, "num_read_outstanding": 16,
                 "num_write_outstanding": 16}
# Fixed logic, LUT and FF, of parts whose size the sources do not determine (typical Vivado utilisation).
MAXI_ADAPTER = (650, 900)          # one m_axi bundle: address/burst logic, both channels
AXILITE_BASE = (120, 150)          # AXI-lite slave: handshake, ap_ctrl, interrupt registers
AXILITE_PER_WORD = (12, 32)        # per 32-bit argument register
CONTROL_BASE = (250, 250)          # top FSM
CONTROL_PER_LOOP = (40, 45)        # loop counter, exit compare, pipeline control
STREAM_SRL = 32                    # SRLC32E: one LUT per bit of width per 32 entries
RESET_BLOCK = (20, 40)             # proc_sys_reset
INTERCONNECT_BASE = (180, 250)     # axi_interconnect (GP0 control path) with one master
INTERCONNECT_PER_MI = (160, 200)
SMARTCONNECT_BASE = (600, 900)     # smartconnect, one per HP port
SMARTCONNECT_PER_SI = (450, 700)
# Single-precision operator cores (DSP, LUT, FF), typical Vitis HLS 7-series cores at 100 MHz; double
# precision counts 2.5x. fadd/fsub/fmul use DSPs unless BIND_OP impl=fabric.
FLOAT_CORES = {"fadd": {"dsp": (2, 220, 350), "fabric": (0, 430, 550)},
               "fmul": {"dsp": (3, 130, 150), "fabric": (0, 700, 450)},
               "fdiv": {"fabric": (0, 800, 1400)}, "sqrt": {"fabric": (0, 500, 800)},
               "exp": {"dsp": (7, 900, 1100)}, "log": {"dsp": (10, 1500, 1500)},
               "erf": {"dsp": (10, 2500, 2500)}, "tanh": {"dsp": (10, 2500, 2500)},
               "pow": {"dsp": (17, 3000, 3000)}}


@dataclass(frozen=True)
class Resources:
    DSP: int = 0
    BRAM18: int = 0
    LUT: int = 0
    FF: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.DSP + other.DSP, self.BRAM18 + other.BRAM18, self.LUT + other.LUT, self.FF + other.FF)

    def __mul__(self, n: int) -> Resources:
        return Resources(self.DSP * n, self.BRAM18 * n, self.LUT * n, self.FF * n)

    def as_dict(self) -> dict[str, int]:
        return {"DSP": self.DSP, "BRAM18": self.BRAM18, "LUT": self.LUT, "FF": self.FF}


def total(items: Iterable[Item]) -> Resources:
    out = Resources()
    for it in items:
        out = out + it.res
    return out


@dataclass(frozen=True)
class Item:
    """One line of an estimate: what, how much, and the rule that gave it."""

    what: str
    res: Resources
    rule: str


@dataclass
class KernelFit:
    """Estimate of one kernel IP."""

    name: str
    items: list[Item]
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> Resources:
        return total(self.items)


@dataclass
class OverlayFit:
    """Estimate of an overlay: its kernel IPs and the block design around them."""

    name: str
    ips: dict[str, KernelFit]
    infrastructure: list[Item]
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> Resources:
        return total(self.infrastructure) + sum((k.total for k in self.ips.values()), Resources())

    def fits(self) -> bool:
        return fits(self.total)

    def as_json(self) -> dict:
        """`pynqtorch fit --json` for an overlay."""
        return report_json(self.total, {inst: k.total.as_dict() for inst, k in self.ips.items()}
                           | {it.what: it.res.as_dict() for it in self.infrastructure})


def fits(res: Resources) -> bool:
    """Whether `res` stays at or under `LIMIT` of every resource of the part."""
    return all(used <= LIMIT * AVAILABLE[name] for name, used in res.as_dict().items())


def report_json(res: Resources, per_ip: dict[str, dict[str, int]]) -> dict:
    """The `--json` structure: part, used/available per resource, fits, per-IP breakdown."""
    return {"part": PART,
            "resources": {name: {"used": used, "available": AVAILABLE[name]} for name, used in res.as_dict().items()},
            "fits": fits(res), "per_ip": per_ip}


# --- storage -------------------------------------------------------------------------------------------------

def bram18_for(depth: int, width: int) -> int:
    """BRAM18 blocks for one memory of `depth` words of `width` bits (best aspect ratio)."""
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in BRAM18_SHAPES)


def lutram_for(depth: int, width: int) -> int:
    """LUTs for one distributed RAM: RAM32M (32 x 6 bits in 4 LUTs) or RAM64M (64 x 3 bits in 4 LUTs)."""
    if depth <= 32:
        return 4 * math.ceil(width / 6)
    return 4 * math.ceil(depth / 64) * math.ceil(width / 3)


def memory(depth: int, width: int, impl: str | None = None) -> tuple[Resources, str]:
    """Resources of one memory bank and the rule used: `impl` from BIND_STORAGE, else by size."""
    bits = depth * width
    if impl is None:
        impl = "lutram" if bits <= LUTRAM_MAX_BITS else "bram"
        how = f"auto: {bits} bits {'<=' if impl == 'lutram' else '>'} {LUTRAM_MAX_BITS}"
    else:
        how = f"BIND_STORAGE impl={impl}"
    if impl == "bram":
        return Resources(BRAM18=bram18_for(depth, width)), f"{how} -> BRAM18 ({depth}x{width})"
    if impl in ("lutram", "srl"):
        return Resources(LUT=lutram_for(depth, width)), f"{how} -> LUTRAM ({depth}x{width})"
    if impl in ("register", "reg"):
        return Resources(FF=bits), f"{how} -> registers"
    raise ValueError(f"storage impl {impl!r} is not available on the XC7Z020 (bram, lutram, srl, register)")


def banks(arr: Array) -> tuple[int, list[int]]:
    """Number of banks and the dims of one bank after the array's ARRAY_PARTITION pragmas."""
    dims = list(arr.dims)
    count = 1
    for p in arr.partitions:
        dim = int(p.get("dim", "1") or 1)
        kind = p.get("type", "complete")
        targets = range(len(dims)) if dim == 0 else [dim - 1]
        for d in targets:
            if d >= len(dims):
                continue
            if kind == "complete":
                count *= dims[d]
                dims[d] = 1
            else:
                factor = int(p.get("factor", "1"))
                count *= factor
                dims[d] = math.ceil(dims[d] / factor)
    return count, dims


def array_items(arr: Array, where: str) -> list[Item]:
    """Storage of one local array (or stream FIFO)."""
    if arr.bits is None:
        raise ValueError(f"{where}: array {arr.name!r} of type {arr.ctype!r}: width unknown")
    if arr.stream_depth is not None:
        depth = arr.stream_depth
        return [Item(f"stream {arr.name}", Resources(LUT=arr.bits * math.ceil(depth / STREAM_SRL), FF=arr.bits),
                     f"FIFO {depth}x{arr.bits} in SRLs + output register")]
    count, dims = banks(arr)
    depth = math.prod(dims)
    if depth == 1:
        return [Item(f"array {arr.name}", Resources(FF=count * arr.bits),
                     f"{count} elements partitioned completely -> registers ({arr.bits} bits each)")]
    one, rule = memory(depth, arr.bits, arr.storage.get("impl"))
    return [Item(f"array {arr.name}", one * count, f"{count} bank(s), {rule} each")]


# --- multipliers ---------------------------------------------------------------------------------------------

def multiplier(widths: tuple[int, int], impl: str | None) -> tuple[Resources, str]:
    """One multiplier of `widths` bits: DSP48E1 (25x18 ports) or LUTs, and the rule that chose."""
    wide, narrow = max(widths), min(widths)
    if impl is None:
        impl = "fabric" if wide <= AUTO_FABRIC_MAX_BITS else "dsp"
        rule = (f"no BIND_OP: {wide}x{narrow} bits, both <= {AUTO_FABRIC_MAX_BITS} -> LUT" if impl == "fabric"
                else f"no BIND_OP: {wide}x{narrow} bits, wider than {AUTO_FABRIC_MAX_BITS} -> DSP48E1")
    else:
        rule = f"BIND_OP impl={impl} ({wide}x{narrow} bits)"
    adder = Resources(LUT=wide + narrow + 2, FF=2 * (wide + narrow))  # its share of the adder tree + registers
    if impl == "dsp":
        n = math.ceil(wide / 25) * math.ceil(narrow / 18)
        return Resources(DSP=n) + adder, rule + f" -> {n} DSP48E1 (25x18)"
    if impl == "fabric":
        return Resources(LUT=wide * narrow) + adder, rule + f" -> {wide * narrow} LUT"
    raise ValueError(f"BIND_OP impl={impl!r} is not a multiplier implementation (dsp, fabric)")


def product_items(fn: Function, copies: int, piped: bool, where: str) -> list[Item]:
    """Multipliers of the products in `fn` (`copies` of the function, `piped`: called from a pipeline)."""
    return [_product_item(p, copies * unrolled_copies(p.loop, piped), where) for p in fn.products]


def _product_item(p: Product, n: int, where: str) -> Item:
    if None in p.widths:
        return Item(f"product {p.target} (line {p.line})", Resources(DSP=n),
                    f"{n} x [operand width unknown: assumed one DSP48E1]")
    one, rule = multiplier((int(p.widths[0]), int(p.widths[1])), p.impl)
    return Item(f"product {p.target} (line {p.line})", one * n, f"{n} x [{rule}]")


def float_core(op: FloatOp) -> tuple[Resources, str]:
    """One floating-point operator core: BIND_OP impl where given, else the core's default."""
    cores = FLOAT_CORES["fadd" if op.kind == "fsub" else op.kind]
    impl = op.impl if op.impl in cores else next(iter(cores))
    dsp, lut, ff = cores[impl]
    scale = 2.5 if op.bits > 32 else 1.0
    res = Resources(DSP=round(dsp * scale), LUT=round(lut * scale), FF=round(ff * scale))
    how = f"BIND_OP impl={op.impl}" if op.impl else f"default impl={impl}"
    return res, f"{op.kind} ({op.bits}-bit float, {how})"


def float_items(fn: Function, copies: int, piped: bool) -> list[Item]:
    """Floating-point operator cores of `fn`, one per operator site and unrolled copy."""
    items = []
    for op in fn.float_ops:
        n = copies * unrolled_copies(op.loop, piped)
        one, rule = float_core(op)
        items.append(Item(f"{op.kind} {op.target} (line {op.line})", one * n, f"{n} x [{rule}]"))
    return items


# --- interfaces ----------------------------------------------------------------------------------------------

def maxi_items(src: Source, fn: Function) -> list[Item]:
    """m_axi adapters: per bundle, read/write buffers of width x burst length x outstanding, plus logic."""
    bundles: dict[str, dict] = {}
    for opts in fn.interfaces:
        if opts.get("mode", opts.get("m_axi")) != "m_axi" and "m_axi" not in opts:
            continue
        port = opts.get("port", "")
        decl = fn.params.get(port, "")
        width = src.bits(decl) or 32
        b = bundles.setdefault(opts.get("bundle", "gmem"), {"width": 0, "read": False, "write": False, "opts": {}})
        b["width"] = max(b["width"], width)
        b["read" if decl.strip().startswith("const") else "write"] = True
        b["opts"].update(opts)
    items = []
    for name, b in sorted(bundles.items()):
        o = {k: int(b["opts"].get(k, v)) for k, v in MAXI_DEFAULTS.items()}
        res, rules = Resources(LUT=MAXI_ADAPTER[0], FF=MAXI_ADAPTER[1]), [f"adapter {MAXI_ADAPTER[0]} LUT"]
        for way, burst, out in (("read", "max_read_burst_length", "num_read_outstanding"),
                                ("write", "max_write_burst_length", "num_write_outstanding")):
            if b[way]:
                mem, rule = memory(o[burst] * o[out], b["width"])
                res = res + mem
                rules.append(f"{way} buffer {b['width']} bits x burst {o[burst]} x {o[out]} outstanding: {rule}")
        items.append(Item(f"m_axi {name}", res, "; ".join(rules)))
    return items


def axilite_item(info: KernelInfo) -> Item:
    words = 0
    for a in info.desc.args:
        words += 2 if "*" in a.ctype else 1
    lut = AXILITE_BASE[0] + AXILITE_PER_WORD[0] * words
    ff = AXILITE_BASE[1] + AXILITE_PER_WORD[1] * words
    return Item(f"s_axilite {info.desc.control.bundle}", Resources(LUT=lut, FF=ff),
                f"ap_ctrl + {words} argument words")


# --- kernels and overlays ------------------------------------------------------------------------------------

def kernel_sources(info: KernelInfo) -> list[Path]:
    return [info.folder / s for s in info.desc.sources]


def estimate_kernel(info: KernelInfo) -> KernelFit:
    """Estimate of one kernel IP from its description and sources (raises ValueError naming what failed)."""
    src = read_source(kernel_sources(info))
    top = info.desc.top
    if top not in src.functions:
        raise ValueError(f"{info.folder}: top function {top!r} not found in {info.desc.sources}")
    where = str(info.folder)
    copies = src.copies(top)
    piped = src.pipelined_callees(top)
    items: list[Item] = []
    loops = 0
    for name, n in copies.items():
        fn = src.functions[name]
        for arr in fn.arrays.values():
            items += [Item(it.what, it.res * n, it.rule + (f" (x{n} copies)" if n > 1 else ""))
                      for it in array_items(arr, f"{where}/{name}")]
        items += product_items(fn, n, name in piped, where)
        items += float_items(fn, n, name in piped)
        if name not in piped:
            loops += len(fn.loops)
    items += maxi_items(src, src.functions[top])
    items.append(axilite_item(info))
    items.append(Item("control", Resources(LUT=CONTROL_BASE[0] + CONTROL_PER_LOOP[0] * loops,
                                           FF=CONTROL_BASE[1] + CONTROL_PER_LOOP[1] * loops),
                      f"FSM + {loops} sequential loops"))
    return KernelFit(info.name, items, list(src.notes))


def infrastructure(hp_masters: dict[str, int], n_ips: int) -> list[Item]:
    """Block design around the IPs: PS7, reset, GP0 interconnect, one SmartConnect per HP port in use."""
    items = [Item("processing_system7_0", Resources(), "hard silicon (PS7): no PL resources"),
             Item("rst_ps7_0_fclk0", Resources(LUT=RESET_BLOCK[0], FF=RESET_BLOCK[1]), "proc_sys_reset"),
             Item("ps7_0_axi_periph", Resources(LUT=INTERCONNECT_BASE[0] + INTERCONNECT_PER_MI[0] * n_ips,
                                                FF=INTERCONNECT_BASE[1] + INTERCONNECT_PER_MI[1] * n_ips),
                  f"axi_interconnect, 1 SI x {n_ips} MI")]
    for hp, si in sorted(hp_masters.items()):
        items.append(Item(f"axi_smc_{hp.lower()}", Resources(LUT=SMARTCONNECT_BASE[0] + SMARTCONNECT_PER_SI[0] * si,
                                                             FF=SMARTCONNECT_BASE[1] + SMARTCONNECT_PER_SI[1] * si),
                          f"smartconnect, {si} SI x 1 MI"))
    return items


def masters(info: KernelInfo) -> int:
    """Number of m_axi bundles (master interfaces) of a kernel."""
    return len({a.bundle or "gmem" for a in info.desc.args if a.interface == "m_axi"})


def estimate_overlay(name: str, ips: list[tuple[str, KernelInfo, str | None]]) -> OverlayFit:
    """Estimate of an overlay given (instance, kernel, HP port or None when unknown) per IP."""
    per_ip = {inst: estimate_kernel(info) for inst, info, _ in ips}
    hp: dict[str, int] = {}
    notes = []
    for inst, info, port in ips:
        if port is None:
            port = f"HP{len(hp) % 4}"
            notes.append(f"{inst}: HP port not known, assumed {port}")
        hp[port] = hp.get(port, 0) + masters(info)
    return OverlayFit(name, per_ip, infrastructure(hp, len(ips)), notes)
