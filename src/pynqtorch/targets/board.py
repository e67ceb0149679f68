"""The `board` target: kernel calls on the FPGA through pynq, on the board (pynq 3.1) or from a PC (pynq >= 4.0).

One call is a staged pipeline on pooled pynq buffers: pack → copy + flush → program registers, ap_start,
wait for ap_done (with a timeout) → invalidate + copy back → unpack. Only the start/wait stage holds the
IP, so a second caller can pack and transfer tile i+1 while tile i runs (double buffering); the dual
overlay's two IPs are two compute units running concurrently. Host time per phase is recorded per unit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..hw.description import Description
from ..hw.kernels import KernelInfo
from ..hw.packing import call_dims, pack_operand, unpack_result, word_dtype, words_for
from .base import ComputeUnit, Target, TargetUnavailable, description_of, golden_gemm
from .board_device import (
    REMOTE_ENV,
    BoardAddress,
    BoardError,
    BufferPool,
    board_addresses,
    on_board,
    open_pynq_device,
)
from .board_overlay import (
    OverlayError,
    OverlaySpec,
    check_against_hwh,
    check_ip_dict,
    complete_clock_rates,
    find_overlay,
    known_overlays,
)
from .board_regs import AP_DONE, AP_IDLE, AP_START, pointer_args, register_values
from .board_weights import ResidentWeights, weight_cache_budget

OVERLAY_ENV = "PYNQTORCH_OVERLAY"
log = logging.getLogger(__name__)
PHASES = ("prepare", "transfer", "wait", "collect")


class KernelTimeout(BoardError):
    """A kernel did not raise ap_done in time; `started` tells whether this call's kernel was started."""

    def __init__(self, message: str, started: bool) -> None:
        super().__init__(message)
        self.started = started


class VerifyError(BoardError):
    """A verified tile differs from the golden model."""


@dataclass
class CallTimes:
    """Host seconds of one call per phase, and when its kernel ran (perf_counter stamps)."""

    prepare: float
    transfer: float
    wait: float
    collect: float
    kernel_start: float
    kernel_end: float


@dataclass
class UnitStats:
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    calls: int = 0
    recent: deque[CallTimes] = field(default_factory=lambda: deque(maxlen=4096))

    def add(self, t: CallTimes) -> None:
        for p in PHASES:
            self.totals[p] += getattr(t, p)
        self.calls += 1
        self.recent.append(t)


class BoardDevice:
    """One board: its pynq device, the overlay loaded on it, and its buffer pool."""

    def __init__(self, address: BoardAddress, rpc_timeout_s: float) -> None:
        self.address = address
        self.pynq = open_pynq_device(address, rpc_timeout_s)
        self.pool = BufferPool(self.pynq)
        self.weights = ResidentWeights(self._allocate, weight_cache_budget())
        self.overlay: OverlaySpec | None = None
        self.lock = threading.Lock()
        self._mmio: dict[int, Any] = {}
        self._users = 0
        self.orphans: list[Any] = []  # buffers a busy IP may still write; freed when the connection closes

    def _allocate(self, words: int, dtype: Any) -> Any:
        import pynq

        return pynq.allocate((words,), dtype, target=self.pynq)

    def acquire(self) -> None:
        """Count one more compute unit using this board's buffers."""
        with self.lock:
            self._users += 1

    def release(self) -> None:
        """One unit is done; when none is left, free the pooled buffers and resident weights."""
        with self.lock:
            self._users -= 1
            idle = self._users <= 0
        if idle:
            self.free_buffers()

    def free_buffers(self) -> None:
        self.weights.close()
        self.pool.close()

    def load(self, spec: OverlaySpec, download: bool | None = None) -> None:
        """Load `spec` (downloading .bit/.hwh through pynq.Overlay when present) and check its IPs respond."""
        with self.lock:
            if self.overlay == spec and not download:
                return
            bit, hwh = spec.bit_path, spec.hwh_path
            if bit.exists() and hwh.exists():
                check_against_hwh(spec, hwh)
                if download is not False:
                    self._download(spec)
            elif bit.exists():
                raise OverlayError(f"{bit} has no {hwh.name} beside it; pynq needs both to load an overlay")
            elif download:
                raise OverlayError(f"overlay {spec.name}: no bitstream at {bit} to download")
            self._mmio.clear()
            self.overlay = spec
            for ip in spec.ips:
                self._probe_ip(ip.instance, ip.base)

    def _download(self, spec: OverlaySpec) -> None:
        """Load `spec`'s .bit + .hwh through `pynq.Overlay`, then check pynq's parsed address map against it."""
        import pynq
        from pynq.ps import Clocks

        try:
            ol = pynq.Overlay(str(spec.bit_path), device=self.pynq, download=False)
            complete_clock_rates(ol, spec)
            if "_real_instance" in vars(Clocks):  # pynq keeps the first device's clock registers: use this board's
                del Clocks._real_instance
            ol.download()
        except OverlayError:
            raise
        except Exception as e:  # pynq raises RuntimeError, TypeError or gRPC errors here
            raise BoardError(f"board {self.address}: loading {spec.bit_path} through pynq.Overlay failed: "
                             f"{_error_text(e)}") from e
        check_ip_dict(spec, ol.ip_dict)

    def mmio(self, base: int, span: int) -> Any:
        if base not in self._mmio:
            import pynq

            try:
                self._mmio[base] = pynq.MMIO(base, span, device=self.pynq)
            except Exception as e:  # noqa: BLE001 -- remote boards report unmapped windows as RuntimeError
                raise BoardError(f"board {self.address}: cannot map 0x{base:08x}: {e}") from None
        return self._mmio[base]

    def _probe_ip(self, instance: str, base: int) -> None:
        assert self.overlay is not None
        span = next(ip.range for ip in self.overlay.ips if ip.instance == instance)
        try:
            self.mmio(base, span).read(0)
        except BoardError as e:
            raise OverlayError(f"overlay {self.overlay.name}: IP {instance} does not answer at 0x{base:08x} on "
                               f"board {self.address} (is the overlay loaded?): {e}") from None

    def close(self) -> None:
        self.free_buffers()
        for buf in self.orphans:
            try:
                buf.freebuffer()
            except Exception as e:  # noqa: BLE001 -- the board is gone
                log.warning("board %s: freeing a buffer failed: %s", self.address, e)
        self.orphans.clear()


_devices: dict[BoardAddress, BoardDevice] = {}
_devices_lock = threading.Lock()


def board_devices() -> list[BoardAddress]:
    """Boards by device index: one per `PYNQ_REMOTE_DEVICES` entry, or the local PL on a board."""
    return board_addresses()


def board_device(index: int = 0, rpc_timeout_s: float = 30.0) -> BoardDevice:
    """The (cached) connection to board `index`."""
    addresses = board_addresses()
    if not 0 <= index < len(addresses):
        raise TargetUnavailable(f"board device {index} does not exist; {len(addresses)} board(s) found "
                                f"({REMOTE_ENV}={os.environ.get(REMOTE_ENV, '')!r}, on board: {on_board()})")
    address = addresses[index]
    with _devices_lock:
        if address not in _devices:
            _devices[address] = BoardDevice(address, rpc_timeout_s)
        return _devices[address]


def close_board_devices() -> None:
    """Free every pooled buffer and resident weight, and forget the connections (a new target reconnects).

    Registered with `atexit`, so a process that exits without closing its target leaves nothing on a board.
    """
    with _devices_lock:
        devices = list(_devices.values())
        _devices.clear()
    for d in devices:
        d.close()


atexit.register(close_board_devices)


class BoardUnit(ComputeUnit):
    """One HLS IP instance on one board.

    `run(a, b, b_key=...)`: a `b_key` names the B tile stably (the engine passes one for tiles of cached
    weights); the packed tile then stays resident on the board and later calls with that key transfer
    only A (`board_weights`).
    """

    resident_b = True  # the scheduler passes b_key to units that declare this

    def __init__(self, board: BoardDevice, instance: str, base: int, span: int, desc: Description,
                 timeout_s: float, verify_every: int) -> None:
        super().__init__(f"board{board.address.index}/{instance}", desc)
        self.board = board
        self.instance = instance
        self.base = base
        self.timeout_s = timeout_s
        self.verify_every = verify_every
        self.stats = UnitStats()
        self._mmio = board.mmio(base, span)
        self._ctrl = desc.control.ap_ctrl_int
        self._hw = threading.Lock()  # held while the IP's registers are programmed and it runs
        self._written: dict[int, bytes] = {}
        self._held: list[Any] = []  # buffers of a call that timed out; kept until the IP is idle again
        self._verify_count = 0
        self._args = {a.role: a for a in desc.args}
        b = self._args["b"]
        self._b_packing = (b.layout, b.pack, str(word_dtype(b)))
        board.acquire()
        self._closed = False

    def run(self, a: np.ndarray, b: np.ndarray, b_key: Hashable | None = None) -> np.ndarray:
        """Run one call; unlike the base, only the start/wait stage is exclusive (callers overlap the rest)."""
        with self._lock:
            self.calls += 1
        return self._run(a, b, b_key)

    def _run(self, a: np.ndarray, b: np.ndarray, b_key: Hashable | None = None) -> np.ndarray:
        m, k = a.shape
        n = b.shape[1]
        if b.shape[0] != k:
            raise ValueError(f"{self.name}: a is {m}x{k} but b is {b.shape[0]}x{n}")
        call_dims(self.desc, m, n, k)  # a bad shape is an error here, not a kernel that never finishes
        t0 = time.perf_counter()
        words = {"a": self._pack("a", a, m, n, k)}
        key = None if b_key is None else (self._b_packing, b.shape, b_key)
        resident = None
        if key is not None:
            resident = self.board.weights.acquire(key, lambda: self._pack("b", b, m, n, k))
            if resident is None:
                key = None
        if resident is None:
            words["b"] = self._pack("b", b, m, n, k)
        pool = self.board.pool
        roles = ("a", "c") if resident is not None else ("a", "b", "c")
        bufs = {r: pool.take(words_for(self._args[r], m, n, k), word_dtype(self._args[r])) for r in roles}
        t1 = time.perf_counter()
        try:
            for role, w in words.items():
                bufs[role][:] = w
                bufs[role].flush()
            t2 = time.perf_counter()
            with self._hw:
                start, end = self._start_and_wait(bufs if resident is None else {**bufs, "b": resident}, m, n, k)
            bufs["c"].invalidate()
            result = unpack_result(np.asarray(bufs["c"]), self._args["c"], m, n)
        except KernelTimeout as e:
            if e.started:  # the IP may still use these buffers: keep them out of the pool until it is idle
                with self._hw:
                    self._held.extend(bufs.values())
                bufs = {}
                key = None  # and the resident B tile stays pinned (freed when the board's buffers are)
            raise
        except BoardError:
            raise
        except Exception as e:  # pynq reports board failures as RuntimeError or gRPC errors
            raise BoardError(f"{self.name}: board {self.board.address} failed: {_error_text(e)}") from e
        finally:
            for buf in bufs.values():
                pool.give(buf)
            if key is not None:
                self.board.weights.release(key)
        t3 = time.perf_counter()
        self.stats.add(CallTimes(t1 - t0, t2 - t1, end - start, t3 - end, start, end))
        with self._lock:
            self._verify_count += 1
            check = self.verify_every and (self._verify_count - 1) % self.verify_every == 0
        if check:
            self._verify(a, b, result)
        return result

    def _pack(self, role: str, x: np.ndarray, m: int, n: int, k: int) -> np.ndarray:
        w = pack_operand(x, self._args[role])
        if w.size != words_for(self._args[role], m, n, k):
            raise ValueError(f"{self.name}: packed operand {role} has {w.size} words, the kernel reads "
                             f"{words_for(self._args[role], m, n, k)} for a {m}x{k}x{n} call")
        return w

    def _read_ctrl(self) -> int:
        return int(self._mmio.read(self._ctrl))

    def _idle(self) -> None:
        """Make sure the IP is idle before programming it (an earlier call may have timed out)."""
        if not self._held:
            return
        deadline = time.monotonic() + self.timeout_s
        while not self._read_ctrl() & AP_IDLE:
            if time.monotonic() > deadline:
                raise KernelTimeout(f"{self.name}: IP {self.instance} at 0x{self.base:08x} is still busy with a call "
                                    f"that timed out earlier (waited another {self.timeout_s} s); reload the "
                                    "overlay to reset the PL", started=False)
            time.sleep(0.001)
        for buf in self._held:
            self.board.pool.give(buf)
        self._held.clear()

    def _start_and_wait(self, bufs: dict[str, Any], m: int, n: int, k: int) -> tuple[float, float]:
        self._idle()
        addresses = {a.name: self.board.pool.address(bufs[a.role]) for a in pointer_args(self.desc)}
        for offset, value in register_values(self.desc, addresses, m, n, k).items():
            if self._written.get(offset) != value:
                self._mmio.write(offset, value)
                self._written[offset] = value
        start = time.perf_counter()
        self._mmio.write(self._ctrl, AP_START)
        deadline = time.monotonic() + self.timeout_s
        polls = 0
        while True:
            ctrl = self._read_ctrl()
            if ctrl & AP_DONE or (ctrl & AP_IDLE and not ctrl & AP_START):
                return start, time.perf_counter()
            if time.monotonic() > deadline:
                raise KernelTimeout(f"{self.name}: kernel {self.desc.name} at IP {self.instance} "
                                    f"(0x{self.base:08x}) on board {self.board.address} did not raise ap_done "
                                    f"within {self.timeout_s} s; its buffers are held until it goes idle",
                                    started=True)
            polls += 1
            if polls > 64:
                time.sleep(0.0002)

    def _verify(self, a: np.ndarray, b: np.ndarray, result: np.ndarray) -> None:
        want = golden_gemm(a, b, self.desc.arith)
        bad = np.argwhere(want != result)
        if bad.size:
            i, j = bad[0]
            raise VerifyError(f"{self.name}: tile {a.shape[0]}x{a.shape[1]}x{b.shape[1]} differs from the golden "
                              f"model in {len(bad)} element(s); first at [{i},{j}]: board {result[i, j]}, "
                              f"golden {want[i, j]}")

    def close(self) -> None:
        """Forget register state and stop using the board (its buffers are freed when no unit uses it)."""
        with self._hw:
            self._written.clear()
            if self._closed:
                return
            self._closed = True
            if self._held:
                self._release_held()
        self.board.release()

    def _release_held(self) -> None:
        """Return the buffers of a timed-out call if the IP went idle since; else they stay (it may write them)."""
        try:
            idle = bool(self._read_ctrl() & AP_IDLE)
        except Exception as e:  # noqa: BLE001 -- a board that is gone cannot be asked
            idle = False
            log.warning("%s: cannot read ap_ctrl while closing: %s", self.name, _error_text(e))
        if idle:
            for buf in self._held:
                self.board.pool.give(buf)
        else:
            log.warning("%s: IP still busy; %d buffer(s) of a timed-out call stay allocated until the board "
                        "connection is closed", self.name, len(self._held))
            self.board.orphans.extend(self._held)
        self._held.clear()


def _error_text(e: Exception) -> str:
    """`CODE: details` for a gRPC error (the board went away, a deadline passed), else the message."""
    code, details = getattr(e, "code", None), getattr(e, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {details()}"
    return f"{type(e).__name__}: {e}"


def interchangeable(x: Description, y: Description) -> bool:
    """True when kernels `x` and `y` take the same calls, packed the same way, with the same arithmetic.

    Such IPs (e.g. a DSP and a LUT-fabric build of one GEMM) serve as compute units of one engine; each
    keeps its own register offsets.
    """
    def packing(d: Description) -> list[tuple]:
        return [(r, d.arg(r).layout, d.arg(r).pack, word_dtype(d.arg(r))) for r in ("a", "b", "c")]

    return (x.arith == y.arith and x.tile == y.tile and x.runtime_dims == y.runtime_dims and x.max == y.max
            and packing(x) == packing(y))


def _device_indices(device: int | None, devices: str | Sequence[int] | None) -> list[int]:
    """Board indices a target runs on: `device` alone, the `devices` list, or every board ("all"/None)."""
    count = len(board_addresses())
    if device is not None:
        if devices is not None:
            raise ValueError("pass either device= (one board) or devices= (several), not both")
        return [device]
    if devices is None or devices == "all":
        if not count:
            raise TargetUnavailable(f"no board found ({REMOTE_ENV}={os.environ.get(REMOTE_ENV, '')!r}, "
                                    f"on board: {on_board()})")
        return list(range(count))
    if isinstance(devices, str):
        raise ValueError(f"devices must be 'all' or a list of board indices, got {devices!r}")  # noqa: TRY004
    indices = list(devices)
    if not indices or len(set(indices)) != len(indices):
        raise ValueError(f"devices must list distinct board indices, got {indices}")
    return indices


def _default_overlay(desc: Description) -> OverlaySpec:
    env = os.environ.get(OVERLAY_ENV)
    if env:
        return find_overlay(env)
    fits = [s for s in known_overlays().values() if any(interchangeable(ip.kernel.desc, desc) for ip in s.ips)]
    if not fits:
        raise TargetUnavailable(f"no bundled overlay has an IP running kernel {desc.name!r}; "
                                f"set {OVERLAY_ENV} or pass overlay=")
    return max(fits, key=lambda s: (sum(interchangeable(ip.kernel.desc, desc) for ip in s.ips), s.name))


class BoardTarget(Target):
    """Kernel calls on PYNQ boards' fabric; see the module docstring.

    Boards: every board (`PYNQ_REMOTE_DEVICES` order, or the local PL) unless `device` (one index) or
    `devices` (``"all"`` or a list of indices) says otherwise; the IPs of all chosen boards are the
    target's compute units. overlay: name/folder/overlay.json/.bit (default: env `PYNQTORCH_OVERLAY`, else
    the bundled overlay with most IPs of the kernel), loaded on each board. timeout_s: ap_done deadline
    per call. verify: cross-check every `verify_every`-th call of each unit against the golden model.
    download: force (True) or skip (False) the bitstream download; None downloads when a .bit exists.
    """

    name = "board"
    priority = 30

    def __init__(self, device: int | None = None, overlay: str | os.PathLike | None = None, *,
                 devices: str | Sequence[int] | None = None, timeout_s: float = 10.0, verify: bool = False,
                 verify_every: int = 8, rpc_timeout_s: float = 30.0, download: bool | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if verify_every < 1:
            raise ValueError(f"verify_every must be >= 1, got {verify_every}")
        self.overlay = overlay
        self.timeout_s = timeout_s
        self.verify_every = verify_every if verify else 0
        self.download = download
        self.boards = [board_device(i, rpc_timeout_s) for i in _device_indices(device, devices)]
        self.board = self.boards[0]
        self.units: list[BoardUnit] = []

    @classmethod
    def probe(cls) -> str | None:
        try:
            import pynq  # noqa: F401
        except ImportError as e:
            return f"pynq is not importable ({e}); pip install 'pynqtorch[board]'"
        if os.environ.get(REMOTE_ENV) or on_board():
            return None
        return f"not on a PYNQ board and {REMOTE_ENV} is not set"

    def compute_units(self, kernel: Description | KernelInfo) -> list[ComputeUnit]:
        """One unit per matching IP on every chosen board, interleaved (board 0 IP 0, board 1 IP 0, ...)."""
        desc = description_of(kernel)
        spec = find_overlay(self.overlay) if self.overlay is not None else _default_overlay(desc)
        ips = [ip for ip in spec.ips if interchangeable(ip.kernel.desc, desc)]
        if not ips:
            raise TargetUnavailable(f"overlay {spec.name} has no IP running kernel {desc.name!r} or one computing "
                                    "the same tiles the same way (IPs: "
                                    + ", ".join(f"{ip.instance}={ip.kernel.name}" for ip in spec.ips) + ")")
        for board in self.boards:
            board.load(spec, self.download)
        units = [BoardUnit(board, ip.instance, ip.base, ip.range, ip.kernel.desc, self.timeout_s, self.verify_every)
                 for ip in ips for board in self.boards]
        self.units.extend(units)
        return list(units)

    def timings(self) -> dict[str, Any]:
        """Per-unit host time per phase (totals and per-call means, seconds) for the report."""
        out = {}
        for u in self.units:
            calls = max(u.stats.calls, 1)
            out[u.name] = {"calls": u.stats.calls, **{p: u.stats.totals[p] for p in PHASES},
                           **{f"{p}_per_call": u.stats.totals[p] / calls for p in PHASES}}
        return out
