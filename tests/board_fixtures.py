"""Fixtures for the board target: virtual PYNQ-Z2 boards in-process or as a `pynqtorch virtual-board` process.

Every board binds 127.0.0.1 on a free port; the unmodified pynq client reaches it through
`PYNQ_REMOTE_DEVICES=127.0.0.1:<port>[,...]`. Teardown frees the client's pooled buffers, then stops boards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import pynqtorch
from pynqtorch.sim.fabric import Faults
from pynqtorch.sim.server import VirtualBoard
from pynqtorch.targets.board import close_board_devices
from pynqtorch.targets.board.connection import REMOTE_ENV

PACKED_OVERLAY = "gemm_packed2"


def write_overlay(folder: Path, name: str, kernels: list[str]) -> Path:
    """An overlay folder whose IPs run `kernels` (one IP each, 64 KiB windows from 0x40000000)."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    ips = [{"instance": f"{k}_{i}", "kernel": k, "base": hex(0x4000_0000 + i * 0x1_0000), "range": "0x10000",
            "hp_port": f"HP{i % 4}"} for i, k in enumerate(kernels)]
    spec = {"name": name, "board": "pynq-z2", "part": "xc7z020clg400-1", "bitstream": f"{name}.bit",
            "clock_mhz": 100, "ips": ips}
    (folder / name / "overlay.json").write_text(json.dumps(spec, indent=2))
    return folder / name


@pytest.fixture(scope="session")
def packed_overlay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two IPs of the runtime-shape `gemm_i8_packed` kernel: small, fast calls."""
    return write_overlay(tmp_path_factory.mktemp("overlays"), PACKED_OVERLAY, ["gemm_i8_packed"] * 2)


class Boards:
    """Start virtual boards and point the pynq client at them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self.started: list[VirtualBoard] = []

    def start(self, overlay: str | os.PathLike | None, **faults: object) -> VirtualBoard:
        vb = VirtualBoard(overlay, faults=Faults(**faults)).start()  # type: ignore[arg-type]
        self.started.append(vb)
        return vb

    def connect(self, *boards: VirtualBoard | str) -> None:
        close_board_devices()
        self._monkeypatch.setenv(REMOTE_ENV, ",".join(b if isinstance(b, str) else b.address for b in boards))


@pytest.fixture
def boards(monkeypatch: pytest.MonkeyPatch) -> Iterator[Boards]:
    b = Boards(monkeypatch)
    yield b
    close_board_devices()
    for vb in b.started:
        vb.stop(0)


class BoardProcess:
    """`pynqtorch virtual-board` in a child process; `address` is what it printed on its first line."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(pynqtorch.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from pynqtorch.cli import app; app()", "virtual-board", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(120)
        if not line or not line[0].startswith("listening "):
            self.proc.kill()
            raise RuntimeError(f"virtual-board did not start: {line} {self.proc.stderr.read()}")
        self.address = line[0].split()[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture
def board_process() -> Iterator[type[BoardProcess]]:
    started: list[BoardProcess] = []

    class Started(BoardProcess):
        def __init__(self, *args: str) -> None:
            super().__init__(*args)
            started.append(self)

    yield Started
    close_board_devices()
    for p in started:
        p.stop()
