"""The `board` target through the unmodified pynq client against virtual PYNQ-Z2 boards on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import pynqtorch
from board_fixtures import BoardProcess, Boards, write_overlay
from pynqtorch import engine
from pynqtorch.hw.kernels import find_kernel
from pynqtorch.hw.overlay import OverlayError
from pynqtorch.targets.base import golden_gemm
from pynqtorch.targets.board import (
    BoardTarget,
    KernelTimeout,
    VerifyError,
    close_board_devices,
    interchangeable,
)
from pynqtorch.targets.board.connection import BoardError, parse_remote
from pynqtorch.targets.board.overlay import check_against_hwh
from pynqtorch.targets.csim import CsimTarget

PACKED = find_kernel("gemm_i8_packed").desc
DSP = find_kernel("gemm_i8_dsp").desc


def _ints(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.integers(-128, 128, shape, dtype=np.int8)


def test_probe_needs_remote_devices_or_a_board(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYNQ_REMOTE_DEVICES", raising=False)
    assert "PYNQ_REMOTE_DEVICES is not set" in BoardTarget.probe()
    monkeypatch.setenv("PYNQ_REMOTE_DEVICES", "127.0.0.1:1")
    assert BoardTarget.probe() is None


def test_remote_device_entries() -> None:
    assert parse_remote("10.0.0.2, 127.0.0.1:50051,[::1]:7000") == [
        ("10.0.0.2", 7967), ("127.0.0.1", 50051), ("::1", 7000)]
    with pytest.raises(ValueError, match="invalid port 'x'"):
        parse_remote("127.0.0.1:x")


@pytest.mark.parametrize("m,n,k", [(1, 32, 8), (3, 64, 24), (17, 96, 64), (64, 256, 128), (5, 32, 1024)])
def test_tiles_bit_identical_to_csim_and_golden(boards: Boards, packed_overlay, m: int, n: int, k: int) -> None:
    boards.connect(boards.start(packed_overlay))
    unit = BoardTarget(overlay=packed_overlay).compute_units(PACKED)[0]
    csim = CsimTarget(units=1).compute_units(PACKED)[0]
    rng = np.random.default_rng(m * 1000 + n + k)
    for a, b in [(_ints(rng, (m, k)), _ints(rng, (k, n))),
                 (np.full((m, k), -128, np.int8), np.full((k, n), -128, np.int8))]:
        got = unit.run(a, b)
        assert got.dtype == np.int64
        assert np.array_equal(got, golden_gemm(a, b, PACKED.arith))
        assert np.array_equal(got, csim.run(a, b))


def test_fixed_tile_kernel_on_bundled_single_overlay(boards: Boards) -> None:
    boards.connect(boards.start("gemm_single"))
    (unit,) = BoardTarget(overlay="gemm_single").compute_units(DSP)
    rng = np.random.default_rng(7)
    a, b = _ints(rng, (256, 256)), _ints(rng, (256, 256))
    assert np.array_equal(unit.run(a, b), golden_gemm(a, b, DSP.arith))


def test_dual_overlay_runs_both_kernels_concurrently(boards: Boards, fresh_target) -> None:
    """The DSP and LUT-fabric builds of the 256-tile GEMM serve as two units of one engine target."""
    vb = boards.start("gemm_dual")
    boards.connect(vb)
    active = pynqtorch.use("board", kernel="gemm_i8_dsp", overlay="gemm_dual", verify=True, verify_every=1,
                           timeout_s=120)  # 256³ C-simulation calls on a loaded machine
    assert [u.instance for u in active.units] == ["gemm_i8_dsp_0", "gemm_i8_fabric_0"]
    assert interchangeable(DSP, find_kernel("gemm_i8_fabric").desc)
    a = torch.randint(-128, 128, (512, 256), dtype=torch.int8)
    b = torch.randint(-128, 128, (256, 512), dtype=torch.int8)
    assert torch.equal(engine.gemm(a, b, out_dtype=torch.int64), a.long() @ b.long())
    assert [u.calls for u in active.units] == [2, 2]
    assert vb.fabric.stats.completed == 4


def test_two_boards_are_two_devices(boards: Boards, packed_overlay) -> None:
    vb0, vb1 = boards.start(packed_overlay), boards.start(packed_overlay)
    boards.connect(vb0, vb1)
    from pynqtorch.targets.board import board_devices

    assert [str(d) for d in board_devices()] == [vb0.address, vb1.address]
    rng = np.random.default_rng(5)
    a, b = _ints(rng, (4, 64)), _ints(rng, (64, 32))
    for index, vb in enumerate((vb0, vb1)):
        unit = BoardTarget(device=index, overlay=packed_overlay).compute_units(PACKED)[0]
        before = vb.fabric.stats.completed
        assert np.array_equal(unit.run(a, b), golden_gemm(a, b, PACKED.arith))
        assert vb.fabric.stats.completed == before + 1
    with pytest.raises(Exception, match="board device 2 does not exist; 2 board"):
        BoardTarget(device=2)


def test_hang_times_out_clearly_and_the_unit_recovers(boards: Boards, packed_overlay) -> None:
    vb = boards.start(packed_overlay)
    boards.connect(vb)
    unit = BoardTarget(overlay=packed_overlay, timeout_s=0.5).compute_units(PACKED)[0]
    rng = np.random.default_rng(2)
    a, b = _ints(rng, (2, 16)), _ints(rng, (16, 32))
    vb.faults.hang = True
    t0 = time.monotonic()
    with pytest.raises(KernelTimeout, match=r"gemm_i8_packed_0 \(0x40000000\).*did not raise ap_done within 0.5 s"):
        unit.run(a, b)
    assert time.monotonic() - t0 < 10  # bounded: the call returned, it did not hang
    # Still hung: the next call waits for the IP to go idle, then says why it cannot start.
    with pytest.raises(KernelTimeout, match="still busy with a call that timed out"):
        unit.run(a, b)
    vb.faults.hang = False
    assert np.array_equal(unit.run(a, b), golden_gemm(a, b, PACKED.arith))
    close_board_devices()
    assert vb.live_buffers == 0


def test_server_death_mid_call_is_a_clear_error(boards: Boards, packed_overlay) -> None:
    vb = boards.start(packed_overlay)
    boards.connect(vb)
    unit = BoardTarget(overlay=packed_overlay, timeout_s=5).compute_units(PACKED)[0]
    a, b = np.ones((1, 8), np.int8), np.ones((8, 32), np.int8)
    unit.run(a, b)
    vb.faults.die_at_start = 1
    with pytest.raises(BoardError, match=r"board0/gemm_i8_packed_0: board 127.0.0.1:\d+ failed: UNAVAILABLE"):
        unit.run(a, b)
    # The next call meets a server that is stopping (CANCELLED) or gone (UNAVAILABLE): a clear error either way.
    with pytest.raises(BoardError, match="failed: (UNAVAILABLE|CANCELLED)"):
        unit.run(a, b)


def test_board_process_dying_is_a_clear_error(boards: Boards, board_process: type[BoardProcess],
                                               packed_overlay) -> None:
    proc = board_process("--overlay", str(packed_overlay), "--die-at-start", "2")
    boards.connect(proc.address)
    unit = BoardTarget(overlay=packed_overlay).compute_units(PACKED)[0]
    a, b = np.ones((1, 8), np.int8), np.ones((8, 32), np.int8)
    assert np.array_equal(unit.run(a, b), np.full((1, 32), 8))
    with pytest.raises(BoardError, match="failed: UNAVAILABLE"):
        unit.run(a, b)
    assert proc.proc.wait(30) == 70


_DIE_CHILD = """
import sys, torch, pynqtorch
pynqtorch.use(target="board", overlay=sys.argv[1])
a, b = torch.randn(8, 64).to("zynq"), torch.randn(64, 32).to("zynq")
(a @ b).cpu()
print("ready", flush=True)
sys.stdin.readline()
try:
    (a @ b).cpu()
except Exception as e:
    print(type(e).__name__, e, flush=True)
"""


def test_exit_after_board_death_logs_one_line_per_board(board_process: type[BoardProcess], packed_overlay) -> None:
    server = board_process("--overlay", str(packed_overlay))
    env = dict(os.environ, PYTHONPATH=str(Path(pynqtorch.__file__).parents[1]), PYNQ_REMOTE_DEVICES=server.address)
    child = subprocess.Popen([sys.executable, "-c", _DIE_CHILD, str(packed_overlay)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline() == "ready\n"
    server.proc.kill()
    server.proc.wait(30)
    out, err = child.communicate("\n", timeout=300)
    assert child.returncode == 0
    assert out.startswith("BoardError board0/") and "UNAVAILABLE" in out
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert f"board {server.address}:" in lines[0] and "not freed, the board is gone (UNAVAILABLE" in lines[0]


def test_corrupted_results_are_caught_by_verify(boards: Boards, packed_overlay) -> None:
    vb = boards.start(packed_overlay, corrupt=True)
    boards.connect(vb)
    rng = np.random.default_rng(4)
    a, b = _ints(rng, (4, 32)), _ints(rng, (32, 32))
    plain = BoardTarget(overlay=packed_overlay).compute_units(PACKED)[0]
    assert not np.array_equal(plain.run(a, b), golden_gemm(a, b, PACKED.arith))  # what verify guards against
    checked = BoardTarget(overlay=packed_overlay, verify=True).compute_units(PACKED)[0]
    with pytest.raises(VerifyError, match=r"tile 4x32x32 differs from the golden model in 1 element"):
        checked.run(a, b)


def test_ten_thousand_calls_leak_no_buffers(boards: Boards, packed_overlay) -> None:
    vb = boards.start(packed_overlay)
    boards.connect(vb)
    target = BoardTarget(overlay=packed_overlay)
    units = target.compute_units(PACKED)
    a, b = np.full((1, 8), 3, np.int8), np.full((8, 32), -2, np.int8)
    want = np.full((1, 32), -48)

    def worker(unit, calls: int) -> None:
        for _ in range(calls):
            assert np.array_equal(unit.run(a, b), want)

    threads = [threading.Thread(target=worker, args=(u, 5000)) for u in units]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(u.calls for u in units) == 10_000 == vb.fabric.stats.completed
    assert target.board.pool.allocated <= 6  # one buffer set per concurrent caller: none per call
    assert vb.memory.allocations == target.board.pool.allocated
    close_board_devices()
    assert vb.live_buffers == 0


def test_overlay_not_loaded_on_the_board(boards: Boards) -> None:
    boards.connect(boards.start(None))
    with pytest.raises(OverlayError, match=r"overlay gemm_single: board .* holds no bitstream pynq knows of, not gemm_single.bit, so its IPs are not touched"):
        BoardTarget(overlay="gemm_single").compute_units(DSP)


def test_overlay_without_the_kernel(boards: Boards, packed_overlay) -> None:
    boards.connect(boards.start(packed_overlay))
    with pytest.raises(Exception, match="has no IP running kernel 'gemm_i8_dsp'"):
        BoardTarget(overlay=packed_overlay).compute_units(DSP)


def test_hwh_register_map_cross_check(tmp_path) -> None:
    from pynqtorch.hw.overlay import find_overlay
    from pynqtorch.sim.handoff import hwh_xml

    spec = find_overlay("gemm_single")
    text = hwh_xml(spec)
    # As Vitis HLS names them: `out` is an HDL reserved word, so its address words are out_r_1/out_r_2.
    assert '<REGISTER NAME="out_r_1">' in text and '<REGISTER NAME="in2_1">' in text
    (tmp_path / "ok.hwh").write_text(text)
    check_against_hwh(spec, tmp_path / "ok.hwh")
    moved = text.replace('<REGISTER NAME="in2_1">\n              <PROPERTY NAME="DESCRIPTION" VALUE="Data signal of '
                         'in2" />\n              <PROPERTY NAME="ADDRESS_OFFSET" VALUE="28" />',
                         '<REGISTER NAME="in2_1">\n              <PROPERTY NAME="DESCRIPTION" VALUE="Data signal of '
                         'in2" />\n              <PROPERTY NAME="ADDRESS_OFFSET" VALUE="24" />')
    assert moved != text
    (tmp_path / "bad.hwh").write_text(moved)
    with pytest.raises(OverlayError, match=r"IP gemm_i8_dsp_0: argument 'in2' is at 0x18 in bad.hwh but 0x1c in "
                                           r".*description.json"):
        check_against_hwh(spec, tmp_path / "bad.hwh")
    (tmp_path / "other.hwh").write_text(text.replace("gemm_i8_dsp_0", "gemm_0"))
    with pytest.raises(OverlayError, match="IP gemm_i8_dsp_0 has no register map"):
        check_against_hwh(spec, tmp_path / "other.hwh")


def test_overlay_with_bit_but_no_hwh(boards: Boards, tmp_path) -> None:
    folder = write_overlay(tmp_path, "gemm_nohwh", ["gemm_i8_dsp"])
    (folder / "gemm_nohwh.bit").write_bytes(b"\x00")
    boards.connect(boards.start(folder))
    with pytest.raises(OverlayError, match="no hardware handoff gemm_nohwh.hwh beside it"):
        BoardTarget(overlay=folder).compute_units(DSP)


def test_bad_tile_shape_is_refused_before_the_kernel_runs(boards: Boards, packed_overlay) -> None:
    vb = boards.start(packed_overlay)
    boards.connect(vb)
    unit = BoardTarget(overlay=packed_overlay).compute_units(PACKED)[0]
    with pytest.raises(ValueError, match="n=8 must be a positive multiple of 32"):
        unit.run(np.ones((1, 8), np.int8), np.ones((8, 8), np.int8))
    assert vb.fabric.stats.starts == 0


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        BoardTarget(timeout_s=0)


def test_model_through_the_engine_matches_csim(boards: Boards, packed_overlay) -> None:
    import torch

    import pynqtorch
    from pynqtorch.targets.registry import reset

    vb = boards.start(packed_overlay)
    boards.connect(vb)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)).eval()
    x = torch.randn(5, 64)
    outs = {}
    try:
        for name, options in (("csim", {}), ("board", {"overlay": packed_overlay})):
            pynqtorch.use(name, kernel="gemm_i8_packed", **options)
            for weights in ("per_channel", "per_group_32"):  # per-group: one resident weight per K group
                with torch.no_grad(), pynqtorch.quant_config(weights=weights):
                    outs[name, weights] = model.to("zynq")(x.to("zynq")).cpu()
    finally:
        reset()
    for weights in ("per_channel", "per_group_32"):
        assert torch.equal(outs["csim", weights], outs["board", weights])
    assert not torch.equal(outs["board", "per_channel"], outs["board", "per_group_32"])
    assert vb.fabric.stats.completed >= 2
