"""The few board files a PYNQ.remote client reads and writes, held in memory.

The client identifies the board from /proc files and loads a bitstream by writing it to /lib/firmware and
its name to the FPGA manager's `firmware` node; writing that node is what programs the virtual fabric.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

FPGA_MANAGER = "/sys/class/fpga_manager/fpga0"
FIRMWARE_NODE = f"{FPGA_MANAGER}/firmware"
FIRMWARE_DIR = "/lib/firmware/"
BOARD_NAME_FILE = "/proc/device-tree/chosen/pynq_board"


class BoardFiles:
    """An in-memory file tree; `on_firmware(name)` is called when a bitstream name is written to the manager."""

    def __init__(self, board: str, on_firmware: Callable[[str], None]) -> None:
        self._files: dict[str, bytes] = {
            "/proc/version": b"Linux version 6.1.30-xilinx-v2023.2 (virtual PYNQ-Z2) armv7l GNU/Linux\n",
            BOARD_NAME_FILE: board.encode() + b"\x00",
            f"{FPGA_MANAGER}/state": b"operating\n",
            f"{FPGA_MANAGER}/flags": b"0\n",
            FIRMWARE_NODE: b"",
        }
        self._on_firmware = on_firmware
        self._lock = threading.Lock()

    def exists(self, path: str) -> bool:
        with self._lock:
            return path in self._files or any(p.startswith(path.rstrip("/") + "/") for p in self._files)

    def read(self, path: str) -> bytes:
        with self._lock:
            if path not in self._files:
                raise FileNotFoundError(path)
            return self._files[path]

    def write(self, path: str, data: bytes) -> None:
        with self._lock:
            self._files[path] = data
        if path == FIRMWARE_NODE:
            self._on_firmware(data.decode().strip())

    def set_loaded(self, binfile: str) -> None:
        """Record `binfile` in the FPGA manager's firmware node, as a boot that loaded it leaves it."""
        with self._lock:
            self._files[FIRMWARE_NODE] = binfile.encode()

    def firmware(self, name: str) -> bytes | None:
        with self._lock:
            return self._files.get(FIRMWARE_DIR + name)
