"""An overlay that is only what Vivado writes (`<name>.bit` + `<name>.hwh`): checked by `pynqtorch overlay check`,
loaded by the board target (by folder, `PYNQTORCH_OVERLAY` or `use(overlay=)`), run by the virtual board at the
.hwh's addresses; bad builds are refused before anything is downloaded."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import pynqtorch
from board_fixtures import Boards, write_overlay
from pynqtorch.cli import app
from pynqtorch.hw.kernels import find_kernel
from pynqtorch.hw.overlay import OverlayError, find_overlay
from pynqtorch.sim.handoff import hwh_xml
from pynqtorch.targets import registry
from pynqtorch.targets.base import golden_gemm
from pynqtorch.targets.board import BoardTarget
from pynqtorch.targets.board.overlay import check_interrupt

DATA = Path(__file__).parent / "data" / "hwh"
PACKED = find_kernel("gemm_i8_packed").desc
REAL_HEADER = (DATA / "dpu.bit.header").read_bytes()[:-4]  # a real Vivado .bit header, up to its length field


def two_packed(tmp_path: Path) -> Path:
    """An overlay folder with two packed GEMM IPs (the bundled gemm_packed has one)."""
    return write_overlay(tmp_path / "src", "gemm_packed2", ["gemm_i8_packed"] * 2)


def vivado_folder(tmp_path: Path, overlay: str | Path | None = None, name: str = "mygemm", seed: int = 0) -> Path:
    """`<name>.bit` (a real Vivado header, an arbitrary body) and `<name>.hwh` for an overlay's design (default:
    two packed GEMM IPs)."""
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / f"{name}.hwh").write_text(hwh_xml(find_overlay(overlay or two_packed(tmp_path))))
    body = np.random.default_rng(seed).integers(0, 256, 8192, dtype=np.uint8).tobytes()
    (folder / f"{name}.bit").write_bytes(REAL_HEADER + struct.pack(">i", len(body)) + body)
    return folder


def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return r.exit_code, r.output


def test_overlay_check_exit_codes_and_messages(tmp_path: Path) -> None:
    folder = vivado_folder(tmp_path)
    code, out = cli("overlay", "check", str(folder))
    assert code == 0 and "consistent" in out and "gemm_i8_packed_1" in out and "0x40010000" in out, out
    assert cli("overlay", "check", str(folder / "mygemm.hwh"))[0] == 0
    assert cli("overlay", "check", "gemm_single")[0] == 0  # a bundled overlay.json, no build yet
    # Offsets that disagree: exit 1 naming IP, argument and both offsets, for every mismatch.
    hwh = folder / "mygemm.hwh"
    text = hwh.read_text()
    hwh.write_text(text.replace('<PROPERTY NAME="ADDRESS_OFFSET" VALUE="52" />',
                                '<PROPERTY NAME="ADDRESS_OFFSET" VALUE="48" />'))
    code, out = cli("overlay", "check", str(folder))
    assert code == 1, out
    for ip in ("gemm_i8_packed_0", "gemm_i8_packed_1"):
        assert f"IP {ip}: argument 'm' is at 0x30 in mygemm.hwh but 0x34 in" in out, out
    # An HLS IP whose kernel is not on the kernel path.
    hwh.write_text(text.replace("xilinx.com:hls:gemm_i8_packed:1.0", "xilinx.com:hls:my_conv:1.0", 1))
    code, out = cli("overlay", "check", str(folder))
    assert code == 1 and "(xilinx.com:hls:my_conv:1.0): no kernel description with top function 'my_conv'" in out
    # overlay.json beside a build that disagrees with it: the IP's base in both.
    spec = json.loads((tmp_path / "src" / "gemm_packed2" / "overlay.json").read_text())
    spec["ips"][1]["base"] = "0x40020000"
    hwh.write_text(text)
    (folder / "overlay.json").write_text(json.dumps({**spec, "name": "mygemm", "bitstream": "mygemm.bit"}))
    code, out = cli("overlay", "check", str(folder))
    assert code == 1 and "IP gemm_i8_packed_1: at 0x40010000 (window 0x10000) in mygemm.hwh but 0x40020000" in out
    # User mistakes: exit 2.
    assert cli("overlay", "check", str(tmp_path / "nowhere"))[0] == 2
    (folder / "overlay.json").unlink()
    hwh.write_text("not xml")
    code, out = cli("overlay", "check", str(folder))
    assert code == 2 and "mygemm.hwh: not a Vivado hardware handoff (expected complete XML)" in out, out


def test_vivado_build_runs_on_the_virtual_board(boards: Boards, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import pynq

    real_allocate, kinds = pynq.allocate, []

    def allocate(*args: object, **kwargs: object) -> object:  # pynq's own allocation, its options recorded
        kinds.append(kwargs.get("cacheable"))
        return real_allocate(*args, **kwargs)

    monkeypatch.setattr(pynq, "allocate", allocate)
    folder = vivado_folder(tmp_path)
    vb = boards.start(None)
    vb.add_overlay(folder)  # the virtual board knows the build; the PL starts empty
    boards.connect(vb)
    units = BoardTarget(overlay=folder, verify=True, verify_every=1).compute_units(PACKED)
    assert vb.design == "mygemm" and len(units) == 2  # the real .bit was downloaded and recognised
    rng = np.random.default_rng(3)
    a, b = rng.integers(-128, 128, (5, 40), dtype=np.int8), rng.integers(-128, 128, (40, 64), dtype=np.int8)
    for u in units:
        assert np.array_equal(u.run(a, b), golden_gemm(a, b, PACKED.arith))
    assert kinds and all(k is True for k in kinds)  # cacheable buffers (flushed/invalidated around each call)


@pytest.mark.parametrize("how", ["env", "use"])
def test_pynqtorch_overlay_env_and_use_take_a_vivado_folder(boards: Boards, tmp_path: Path, how: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder = vivado_folder(tmp_path)
    vb = boards.start(None)
    vb.add_overlay(folder)
    boards.connect(vb)
    if how == "env":
        monkeypatch.setenv("PYNQTORCH_OVERLAY", str(folder))
        pynqtorch.use(target="board", kernel="gemm_i8_packed")
    else:
        pynqtorch.use(target="board", kernel="gemm_i8_packed", overlay=str(folder))
    try:
        x = torch.randn(6, 32)
        w = torch.randn(16, 32)
        y = torch.nn.functional.linear(x.to("zynq"), w.to("zynq")).cpu()
        assert vb.design == "mygemm"
        assert torch.allclose(y, x @ w.T, rtol=0.05, atol=0.05 * float((x @ w.T).abs().max()))
    finally:
        registry.reset()


def test_bad_builds_download_nothing(boards: Boards, tmp_path: Path) -> None:
    vb = boards.start(None)
    boards.connect(vb)
    cases = {
        "unknown HLS IP": (lambda t: t.replace("xilinx.com:hls:gemm_i8_packed:1.0", "xilinx.com:hls:my_conv:1.0"),
                           r"IP gemm_i8_packed_0 \(xilinx.com:hls:my_conv:1.0\): no kernel description"),
        "truncated": (lambda t: t[: len(t) // 3], r"mygemm.hwh: not a Vivado hardware handoff \(expected complete XML\)"),
        "other part": (lambda t: t.replace('DEVICE="7z020"', 'DEVICE="7z010"'),
                       r"built for part xc7z010clg400-1, expected xc7z020clg400-1"),
    }
    for i, (edit, expected) in enumerate(cases.values()):
        folder = vivado_folder(tmp_path / str(i))
        hwh = folder / "mygemm.hwh"
        hwh.write_text(edit(hwh.read_text()))
        with pytest.raises(OverlayError, match=expected):
            BoardTarget(overlay=folder).compute_units(PACKED)
    folder = vivado_folder(tmp_path / "nohwh")
    (folder / "mygemm.hwh").unlink()
    with pytest.raises(OverlayError, match=r"mygemm.bit: no hardware handoff mygemm.hwh beside it"):
        BoardTarget(overlay=folder / "mygemm.bit").compute_units(PACKED)
    assert vb.design is None  # nothing was downloaded


def test_registers_are_rewritten_after_a_reload(boards: Boards, tmp_path: Path) -> None:
    """A download resets the PL (every register reads zero); a unit must not trust what it wrote before."""
    folder = vivado_folder(tmp_path)
    vb = boards.start(None)
    vb.add_overlay(folder)
    boards.connect(vb)
    target = BoardTarget(overlay=folder)
    unit = target.compute_units(PACKED)[0]
    rng = np.random.default_rng(5)
    a, b = rng.integers(-128, 128, (3, 16), dtype=np.int8), rng.integers(-128, 128, (16, 32), dtype=np.int8)
    want = golden_gemm(a, b, PACKED.arith)
    assert np.array_equal(unit.run(a, b), want)
    target.board.load(find_overlay(folder), download=True)  # the same design again: a fresh, zeroed PL
    assert np.array_equal(unit.run(a, b), want)  # same shapes, same pooled buffers: addresses written again



def test_block_units_follow_a_reload(boards: Boards, tmp_path: Path) -> None:
    """Map/rows units too: after a download (PL reset, mappings renewed) the next call still computes."""
    folder = vivado_folder(tmp_path, overlay="gemm_ops", name="myops", seed=1)
    vb = boards.start(None)
    vb.add_overlay(folder)
    boards.connect(vb)
    target = BoardTarget(overlay=folder)
    target.compute_units(PACKED)  # loads the design
    (unit,) = target.block_units(find_kernel("gelu_f32"))
    x = {"x": np.linspace(-4, 4, 300, dtype=np.float32)}
    first = unit.run("aten::gelu", x, {})
    target.board.load(find_overlay(folder), download=True)  # the same design again: a fresh, zeroed PL
    again = unit.run("aten::gelu", x, {})
    assert first.keys() == again.keys() and all(np.array_equal(first[k], again[k]) for k in first)
    unit.close()

def test_interrupt_wait_is_refused_where_it_cannot_work(boards: Boards, tmp_path: Path) -> None:
    """wait='interrupt' needs pynq on the board and a wired interrupt; elsewhere a clear error before any unit."""
    folder = vivado_folder(tmp_path)
    vb = boards.start(None)
    vb.add_overlay(folder)
    boards.connect(vb)
    with pytest.raises(ValueError, match="wait must be 'poll' or 'interrupt'"):
        BoardTarget(overlay=folder, wait="irq")  # type: ignore[arg-type]
    target = BoardTarget(overlay=folder, wait="interrupt")
    with pytest.raises(registry.TargetUnavailable, match="interrupt-driven wait needs pynq on the board itself"):
        target.compute_units(PACKED)
    # The wiring check itself, on pynq's own parse of the downloaded design (its IPs' interrupt is not wired).
    ip_dict = target.board.ip_dict
    assert ip_dict is not None and ip_dict["gemm_i8_packed_0"]["interrupts"] == {}
    with pytest.raises(OverlayError, match=r"IP gemm_i8_packed_0: its `interrupt` is not wired to an AXI interrupt "
                                           r"controller in mygemm.hwh; use wait='poll'"):
        check_interrupt(ip_dict, "gemm_i8_packed_0", "mygemm.hwh")
    check_interrupt({"gemm_i8_packed_0": {"interrupts": {"interrupt": {"controller": "axi_intc_0", "index": 0}}}},
                    "gemm_i8_packed_0", "mygemm.hwh")  # the shape pynq gives a wired one
