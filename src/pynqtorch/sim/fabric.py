"""The programmable logic of the virtual board: the loaded overlay's HLS IPs as AXI-lite register files.

Writing ap_start to an IP decodes its argument registers per the kernel description, runs the kernel's
C-simulation on the buffer memory at the programmed physical addresses (in a thread, so the client polls
as it would on hardware) and then raises ap_done / ap_idle. Fault switches make kernels hang, run slow or
return corrupted data.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..hw import blocks as hwb
from ..hw.kernels import KernelInfo
from ..hw.packing import word_dtype, words_for
from ..hw.registers import AP_DONE, AP_IDLE, AP_READY, AP_START, decode_registers
from .memory import BufferMemory

log = logging.getLogger(__name__)


@dataclass
class Faults:
    """Fault injection switches; tests flip them while the board runs.

    hang: kernels started while set never raise ap_done (they finish once it is cleared, unless the PL is
    reprogrammed first). delay_s: extra seconds each kernel call takes. corrupt: flip one bit of one
    result word of every call. die_at_start: the server dies while handling the N-th ap_start from now
    (0: off).
    """

    hang: bool = False
    delay_s: float = 0.0
    corrupt: bool = False
    die_at_start: int = 0


@dataclass
class IPSpec:
    """One HLS IP instance of an overlay."""

    instance: str
    kernel: KernelInfo
    base: int
    span: int


@dataclass
class FabricStats:
    starts: int = 0
    completed: int = 0
    errors: list[str] = field(default_factory=list)


class KernelIP:
    """Register file and execution of one HLS IP."""

    def __init__(self, spec: IPSpec, fabric: Fabric) -> None:
        self.spec = spec
        self.desc = spec.kernel.desc
        self._fabric = fabric
        self._ctrl_off = self.desc.control.ap_ctrl_int
        self._regs = np.zeros(spec.span // 4, np.uint32)
        self._lock = threading.Lock()
        self._busy = False
        self._done = False
        self._abandoned = False

    def read(self, offset: int) -> int:
        self._check(offset)
        with self._lock:
            if offset == self._ctrl_off:
                value = (AP_START if self._busy else 0) | (AP_IDLE if not self._busy else 0)
                if self._done:
                    value |= AP_DONE | AP_READY
                    self._done = False  # ap_done is clear-on-read
                return value
            return int(self._regs[offset // 4])

    def write(self, offset: int, value: int) -> None:
        self._check(offset)
        with self._lock:
            if offset != self._ctrl_off:
                self._regs[offset // 4] = value & 0xFFFF_FFFF
                return
            if not value & AP_START or self._busy:
                return  # ap_start while running is ignored, as in hardware
            self._busy = True
            self._done = False
            regs = self._regs.copy()
        self._fabric.started(self)
        threading.Thread(target=self._execute, args=(regs,), name=f"vb-{self.spec.instance}", daemon=True).start()

    def abandon(self) -> None:
        """Drop an in-flight call (the PL is being reprogrammed)."""
        self._abandoned = True

    def _check(self, offset: int) -> None:
        if offset % 4 or not 0 <= offset < self.spec.span:
            raise ValueError(f"{self.spec.instance}: register offset 0x{offset:x} is outside its "
                             f"0x{self.spec.span:x}-byte window or unaligned")

    def _execute(self, regs: np.ndarray) -> None:
        faults = self._fabric.faults
        if faults.delay_s:
            time.sleep(faults.delay_s)
        while faults.hang and not self._abandoned:
            time.sleep(0.005)
        if self._abandoned:
            return
        try:
            self._run_kernel(regs)
        except Exception as e:  # noqa: BLE001 -- a faulting kernel never completes, as on hardware
            msg = f"{self.spec.instance}: kernel call failed and will never raise ap_done: {e}"
            log.error(msg)
            self._fabric.stats.errors.append(msg)
            return
        with self._lock:
            if self._abandoned:
                return
            self._busy = False
            self._done = True
        self._fabric.stats.completed += 1

    def _run_kernel(self, regs: np.ndarray) -> None:
        if self.desc.op != "gemm":
            self._run_block_kernel(regs)
            return
        addresses, shape = decode_registers(self.desc, lambda off: int(regs[off // 4]))
        kwargs: dict[str, Any] = {}
        views: dict[str, np.ndarray] = {}
        for arg in self.desc.args:
            if arg.interface == "s_axilite":
                kwargs[arg.name] = shape[arg.role]
                continue
            dt = word_dtype(arg)
            words = words_for(arg, shape["m"], shape["n"], shape["k"])
            views[arg.role] = self._fabric.memory.view(addresses[arg.name], words * dt.itemsize).view(dt)
            kwargs[arg.name] = views[arg.role]
        self._fabric.library(self.spec.kernel, self.spec.instance).call(**kwargs)
        if self._fabric.faults.corrupt and views["c"].size:
            out = views["c"]
            out[random.randrange(out.size)] ^= 1


    def _run_block_kernel(self, regs: np.ndarray) -> None:
        """A map/rows kernel: buffers and sizes (n or rows, cols) and eps from the registers, per `hw.blocks`."""
        addresses, scalars = hwb.decode_registers(self.desc, lambda off: int(regs[off // 4]))
        sizes = hwb.check_sizes(self.desc, {r: int(v) for r, v in scalars.items() if r in ("n", "rows", "cols")})
        kwargs: dict[str, Any] = {}
        for arg in self.desc.args:
            if not arg.pointer:
                kwargs[arg.name] = scalars[arg.role]
                continue
            dt = hwb.word_dtype(self.desc, arg)
            words = hwb.elements(self.desc, arg.role, sizes)
            kwargs[arg.name] = self._fabric.memory.view(addresses[arg.name], words * dt.itemsize).view(dt)
        self._fabric.library(self.spec.kernel, self.spec.instance).call(**kwargs)
        out = kwargs[self.desc.roles["out"].name]
        if self._fabric.faults.corrupt and out.size:
            out.view(f"u{out.dtype.itemsize}")[random.randrange(out.size)] ^= 1


# Zynq-7000 system-level control registers (SLCR): the PLL and PL clock controls pynq's `Clocks` programs
# when an overlay is downloaded. Reset values: 50 MHz PS reference, ARM PLL x26, DDR PLL x21, IO PLL x20
# (1000 MHz), FCLK0-3 from the IO PLL divided by 10 (100 MHz).
SLCR_BASE, SLCR_SPAN = 0xF800_0000, 0x1000
PS_REF_MHZ = 50.0
_PLL_CTRL = {0x100: 26, 0x104: 21, 0x108: 20}  # ARM, DDR, IO: feedback divisor in bits [18:12]
_FPGA_CLK_CTRL = (0x170, 0x180, 0x190, 0x1A0)  # DIVISOR0 [13:8], DIVISOR1 [25:20], SRCSEL [5:4]
_PL_CLK_PLLS = (0x108, 0x108, 0x100, 0x104)  # PLL by SRCSEL value


class SystemControl:
    """The SLCR as a register file; `pl_clock_mhz(i)` decodes FCLK i as the programmed dividers set it."""

    def __init__(self) -> None:
        self.spec = IPSpec("slcr", None, SLCR_BASE, SLCR_SPAN)  # type: ignore[arg-type]
        self._regs = np.zeros(SLCR_SPAN // 4, np.uint32)
        for off, fdiv in _PLL_CTRL.items():
            self._regs[off // 4] = fdiv << 12
        for off in _FPGA_CLK_CTRL:
            self._regs[off // 4] = (1 << 20) | (10 << 8)
        self._lock = threading.Lock()

    def read(self, offset: int) -> int:
        self._check(offset)
        with self._lock:
            return int(self._regs[offset // 4])

    def write(self, offset: int, value: int) -> None:
        self._check(offset)
        with self._lock:
            self._regs[offset // 4] = value & 0xFFFF_FFFF

    def _check(self, offset: int) -> None:
        if offset % 4 or not 0 <= offset < SLCR_SPAN:
            raise ValueError(f"slcr: register offset 0x{offset:x} is outside its window or unaligned")

    def pl_clock_mhz(self, index: int) -> float:
        ctrl = self.read(_FPGA_CLK_CTRL[index])
        pll = PS_REF_MHZ * ((self.read(_PL_CLK_PLLS[(ctrl >> 4) & 3]) >> 12) & 0x7F)
        div = max((ctrl >> 8) & 0x3F, 1) * max((ctrl >> 20) & 0x3F, 1)
        return round(pll / div, 6)


class Fabric:
    """The IPs of the currently loaded overlay, addressed by physical address."""

    def __init__(self, memory: BufferMemory, faults: Faults, library: Callable[[KernelInfo, str], Any],
                 on_die: Callable[[], None]) -> None:
        self.memory = memory
        self.faults = faults
        self.library = library
        self.stats = FabricStats()
        self._on_die = on_die
        self.ips: list[KernelIP] = []
        self.design: str | None = None
        self.slcr = SystemControl()

    def program(self, design: str | None, specs: list[IPSpec]) -> None:
        """Load a design: in-flight calls are dropped, registers reset."""
        for ip in self.ips:
            ip.abandon()
        self.ips = [KernelIP(s, self) for s in specs]
        self.design = design

    def find(self, address: int, length: int) -> tuple[KernelIP | SystemControl, int]:
        """The IP (or the SLCR) whose window holds ``[address, address + length)`` and the offset into it."""
        for ip in (self.slcr, *self.ips):
            if ip.spec.base <= address and address + length <= ip.spec.base + ip.spec.span:
                return ip, address - ip.spec.base
        raise LookupError(f"no IP of the loaded design ({self.design or 'none'}) maps 0x{address:08x}"
                          f"+0x{length:x}; IPs: " + ", ".join(f"{ip.spec.instance}@0x{ip.spec.base:08x}"
                                                             for ip in self.ips))

    def started(self, ip: KernelIP) -> None:
        self.stats.starts += 1
        if self.faults.die_at_start:
            self.faults.die_at_start -= 1
            if self.faults.die_at_start == 0:
                log.error("fault injection: dying at ap_start of %s", ip.spec.instance)
                self._on_die()

    def busy(self) -> list[str]:
        return [ip.spec.instance for ip in self.ips if ip._busy]

