"""The `board` target: kernel calls on the FPGA through pynq, on the board (pynq 3.1) or from a PC (pynq >= 4.0).

The IPs of every chosen board that compute the kernel's tiles are the target's compute units, so the
engine spreads a GEMM over every unit of every board (`PYNQ_REMOTE_DEVICES`). Connections are
`board.device`, one IP is a `board.unit.BoardUnit`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

from ...hw.description import Description
from ...hw.kernels import KernelInfo
from ...hw.overlay import OverlayInfo, find_overlay, overlays
from ...hw.packing import word_dtype
from ..base import ComputeUnit, Target, TargetUnavailable, description_of
from .connection import REMOTE_ENV, board_addresses, on_board
from .device import board_device
from .unit import BoardUnit

OVERLAY_ENV = "PYNQTORCH_OVERLAY"


def interchangeable(x: Description, y: Description) -> bool:
    """True when kernels `x` and `y` take the same calls, packed the same way, with the same arithmetic.

    Such IPs (e.g. a DSP and a LUT-fabric build of one GEMM) serve as compute units of one engine; each
    keeps its own register offsets.
    """
    def packing(d: Description) -> list[tuple]:
        return [(r, d.arg(r).layout, d.arg(r).pack, word_dtype(d.arg(r))) for r in ("a", "b", "c")]

    if x.op != "gemm" or y.op != "gemm":
        return False
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


def _default_overlay(desc: Description) -> OverlayInfo:
    env = os.environ.get(OVERLAY_ENV)
    if env:
        return find_overlay(env)
    def matching(info: OverlayInfo) -> int:
        return sum(interchangeable(k.desc, desc) for k in info.kernels.values())

    fits = [info for info in overlays().values() if matching(info)]
    if not fits:
        raise TargetUnavailable(f"no bundled overlay has an IP running kernel {desc.name!r}; "
                                f"set {OVERLAY_ENV} or pass overlay=")
    return max(fits, key=lambda info: (matching(info), info.name))


class BoardTarget(Target):
    """Kernel calls on PYNQ boards' fabric; see the module docstring.

    Boards: every board (`PYNQ_REMOTE_DEVICES` order, or the local PL) unless `device` (one index) or
    `devices` (``"all"`` or a list of indices) says otherwise; the IPs of all chosen boards are the
    target's compute units. overlay: name/folder/overlay.json/.bit (default: env `PYNQTORCH_OVERLAY`, else
    the bundled overlay with most IPs of the kernel), loaded on each board. timeout_s: ap_done deadline
    per call. verify: cross-check every `verify_every`-th call of each unit against the golden model.
    download: force (True) or skip (False) the bitstream download; None downloads when a .bit exists.
    wait: "poll" (default) reads ap_ctrl until ap_done; "interrupt" sleeps on each IP's interrupt (pynq on the
    board itself, an overlay downloaded here whose IPs' `interrupt` reaches an AXI interrupt controller).
    """

    name = "board"
    priority = 30

    def __init__(self, device: int | None = None, overlay: str | os.PathLike | None = None, *,
                 devices: str | Sequence[int] | None = None, timeout_s: float = 10.0, verify: bool = False,
                 verify_every: int = 8, rpc_timeout_s: float = 30.0, download: bool | None = None,
                 wait: Literal["poll", "interrupt"] = "poll") -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if verify_every < 1:
            raise ValueError(f"verify_every must be >= 1, got {verify_every}")
        if wait not in ("poll", "interrupt"):
            raise ValueError(f"wait must be 'poll' or 'interrupt', got {wait!r}")
        self.wait = wait
        self.overlay = overlay
        self.timeout_s = timeout_s
        self.verify_every = verify_every if verify else 0
        self.download = download
        self.boards = [board_device(i, rpc_timeout_s) for i in _device_indices(device, devices)]
        self.board = self.boards[0]
        self.spec: OverlayInfo | None = None  # the overlay loaded by compute_units

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
        ips = [ip for ip in spec.ips if interchangeable(spec.kernels[ip.instance].desc, desc)]
        if not ips:
            raise TargetUnavailable(f"overlay {spec.name} has no IP running kernel {desc.name!r} or one computing "
                                    "the same tiles the same way (IPs: "
                                    + ", ".join(f"{ip.instance}={ip.kernel}" for ip in spec.ips) + ")")
        for board in self.boards:
            board.load(spec, self.download)
        self.spec = spec
        irq = {(i, ip.instance): board.interrupt(ip.instance) if self.wait == "interrupt" else None
               for ip in ips for i, board in enumerate(self.boards)}  # every refusal before any unit exists
        return [BoardUnit(board, ip.instance, ip.base_int, ip.range_int, spec.kernels[ip.instance].desc,
                          self.timeout_s, self.verify_every, irq[i, ip.instance])
                for ip in ips for i, board in enumerate(self.boards)]

    def block_units(self, kernel: KernelInfo) -> list:
        """One unit per IP of the loaded overlay running map/rows kernel `kernel`, on every chosen board."""
        from .blocks import board_block_units

        if self.spec is None:
            raise TargetUnavailable("board: no overlay loaded yet (the GEMM units load it)")
        return board_block_units(self.boards, self.spec, kernel, self.timeout_s)
