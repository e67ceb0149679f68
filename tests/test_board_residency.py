"""Board target: weights resident on the board, all boards as units of one target, clean shutdown, .bit + .hwh."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from pynqmetadata.frontends import Metadata
from pynqmetadata.views.runtime import RuntimeMetadataParser

import pynqtorch
from board_fixtures import Boards, write_overlay
from pynqtorch import engine
from pynqtorch.hw.kernels import find_kernel
from pynqtorch.hw.overlay import OverlayError, find_overlay
from pynqtorch.hw.registers import handoff_registers
from pynqtorch.sim.handoff import hwh_xml, write_handoff
from pynqtorch.targets import registry
from pynqtorch.targets.base import golden_gemm
from pynqtorch.targets.board import BoardTarget
from pynqtorch.targets.board.weights import WEIGHT_CACHE_ENV, weight_cache_budget

PACKED = find_kernel("gemm_i8_packed").desc


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 10)).eval()


def test_model_weights_are_transferred_once(boards: Boards, packed_overlay, fresh_target) -> None:
    vb = boards.start(packed_overlay)
    boards.connect(vb)
    model = _model().to("zynq")
    x = torch.randn(5, 64).to("zynq")
    pynqtorch.use("ref", kernel="gemm_i8_packed")
    with torch.no_grad():
        want = model(x).cpu()
    pynqtorch.use("board", kernel="gemm_i8_packed", overlay=packed_overlay)
    weights = registry.active().units[0].board.weights

    def forward() -> tuple[torch.Tensor, int, int]:
        starts, writes = vb.fabric.stats.starts, vb.memory.writes
        with torch.no_grad():
            y = model(x).cpu()
        return y, vb.fabric.stats.starts - starts, vb.memory.writes - writes

    y1, calls1, writes1 = forward()
    tiles = weights.stats.uploads
    y2, calls2, writes2 = forward()
    assert torch.equal(y1, want) and torch.equal(y2, want)
    assert tiles > 0 and weights.resident == tiles and weights.stats.uploads == tiles
    assert writes1 == calls1 + tiles  # A of every call, each weight tile once
    assert writes2 == calls2  # second forward: only A
    assert weights.stats.hits >= calls2

    with torch.no_grad():
        model[0].weight.mul_(-0.5)  # an in-place update through torch: the engine re-quantizes, new tiles go up
    y3, calls3, writes3 = forward()
    new_tiles = weights.stats.uploads - tiles
    assert new_tiles > 0 and writes3 == calls3 + new_tiles
    pynqtorch.use("ref", kernel="gemm_i8_packed")
    with torch.no_grad():
        assert torch.equal(y3, model(x).cpu())
    assert not torch.equal(y3, y1)
    assert vb.live_buffers == 0  # replacing the board target freed the pool and the resident tiles


def test_resident_tiles_are_lru_bounded(boards: Boards, packed_overlay, monkeypatch) -> None:
    """B tiles of 64x32 int8 are 2 KiB; a 5 KiB budget holds two, the third evicts the least recently used."""
    monkeypatch.setenv(WEIGHT_CACHE_ENV, str(5 * 1024 / 2**20))
    vb = boards.start(packed_overlay)
    boards.connect(vb)
    unit = BoardTarget(overlay=packed_overlay).compute_units(PACKED)[0]
    weights = unit.board.weights
    rng = np.random.default_rng(9)
    a = rng.integers(-128, 128, (3, 64), dtype=np.int8)
    bs = {key: rng.integers(-128, 128, (64, 32), dtype=np.int8) for key in ("w1", "w2", "w3")}
    # w3 evicts w2 (w1 was used since), the last w2 evicts w3.
    for step, (key, resident) in enumerate((("w1", False), ("w2", False), ("w1", True), ("w3", False), ("w1", True),
                                            ("w2", False))):
        writes = vb.memory.writes
        assert np.array_equal(unit.run(a, bs[key], b_key=key), golden_gemm(a, bs[key], PACKED.arith))
        state = f"step {step} ({key}): {vb.memory.writes - writes} write(s), {weights.stats}, used {weights.used}"
        assert vb.memory.writes - writes == (1 if resident else 2), state  # A only, or A and the B tile
        assert weights.used <= weights.budget and weights.resident <= 2, state
    assert (weights.stats.uploads, weights.stats.evictions, weights.stats.hits) == (4, 2, 2)
    oversized = rng.integers(-128, 128, (1024, 32), dtype=np.int8)  # 32 KiB: never resident, still right
    a_big = rng.integers(-128, 128, (1, 1024), dtype=np.int8)
    assert np.array_equal(unit.run(a_big, oversized, b_key="big"), golden_gemm(a_big, oversized, PACKED.arith))
    assert weights.stats.skipped == 1


def test_weight_cache_budget_setting(monkeypatch) -> None:
    monkeypatch.delenv(WEIGHT_CACHE_ENV, raising=False)
    assert weight_cache_budget() == 64 << 20
    monkeypatch.setenv(WEIGHT_CACHE_ENV, "0")
    assert weight_cache_budget() == 0
    monkeypatch.setenv(WEIGHT_CACHE_ENV, "lots")
    with pytest.raises(ValueError, match="PYNQTORCH_BOARD_WEIGHT_CACHE_MB='lots' is not a number"):
        weight_cache_budget()


def test_all_boards_are_units_of_one_target(boards: Boards, packed_overlay, fresh_target) -> None:
    vbs = [boards.start(packed_overlay), boards.start(packed_overlay)]
    boards.connect(*vbs)
    active = pynqtorch.use("board", kernel="gemm_i8_packed", overlay=packed_overlay, devices="all")
    assert [u.name for u in active.units] == ["board0/gemm_i8_packed_0", "board1/gemm_i8_packed_0",
                                              "board0/gemm_i8_packed_1", "board1/gemm_i8_packed_1"]
    a = torch.randint(-128, 128, (40, 300), dtype=torch.int8)
    b = torch.randint(-128, 128, (300, 1000), dtype=torch.int8)  # four column blocks: one per unit
    got = engine.gemm(a, b, out_dtype=torch.int64)
    assert torch.equal(got, a.long() @ b.long())
    assert all(vb.fabric.stats.completed > 0 for vb in vbs)
    assert all(u.calls > 0 for u in active.units)
    registry.reset()  # closing the target frees every buffer on every board
    assert [vb.live_buffers for vb in vbs] == [0, 0]
    assert all(vb.memory.allocations > 0 for vb in vbs)
    default = BoardTarget(overlay=packed_overlay).compute_units(PACKED)
    assert len(default) == 4  # every listed board unless told otherwise
    assert [u.name for u in BoardTarget(device=1, overlay=packed_overlay).compute_units(PACKED)] == [
        "board1/gemm_i8_packed_0", "board1/gemm_i8_packed_1"]
    with pytest.raises(ValueError, match="either device= .* or devices="):
        BoardTarget(device=0, devices="all")
    with pytest.raises(ValueError, match="distinct board indices"):
        BoardTarget(devices=[0, 0])


def test_interpreter_exit_frees_board_buffers(boards: Boards, packed_overlay) -> None:
    """A process that exits without closing its target leaves no buffer on the board (atexit)."""
    vb = boards.start(packed_overlay)
    script = textwrap.dedent(f"""
        import torch, pynqtorch
        from pynqtorch import engine
        pynqtorch.use("board", kernel="gemm_i8_packed", overlay={str(packed_overlay)!r})
        a = torch.ones(4, 64, dtype=torch.int8)
        w = torch.ones(64, 32, dtype=torch.int8)
        assert int(engine.gemm(a, w, weight=True, out_dtype=torch.int64)[0, 0]) == 64
    """)
    src = str(Path(pynqtorch.__file__).parents[1])
    env = {"PYNQ_REMOTE_DEVICES": vb.address, "PYTHONPATH": src, "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert vb.memory.allocations >= 3  # A, C and the resident weight tile
    assert vb.live_buffers == 0


def _handoff_overlay(folder: Path, clock_mhz: int) -> Path:
    overlay = write_overlay(folder, "gemm_handoff", ["gemm_i8_packed", "gemm_i8_packed"])
    spec = json.loads((overlay / "overlay.json").read_text())
    (overlay / "overlay.json").write_text(json.dumps({**spec, "clock_mhz": clock_mhz}))
    write_handoff(find_overlay(overlay))
    return overlay


def test_generated_hwh_is_what_pynq_parses(tmp_path) -> None:
    spec = find_overlay("gemm_dual")
    path = tmp_path / "gemm_dual.hwh"
    path.write_text(hwh_xml(spec))
    parsed = RuntimeMetadataParser(Metadata(input=str(path)))
    for ip in spec.ips:
        entry = parsed.ip_dict[ip.instance]
        assert (entry["phys_addr"], entry["addr_range"]) == (ip.base_int, ip.range_int)
        regs = {name: r["address_offset"] for name, r in entry["registers"].items()}
        assert regs == {name: off for name, (off, _, _) in handoff_registers(spec.kernels[ip.instance].desc).items()}
    assert parsed.clock_dict[0]["enable"] == 1


def test_bit_and_hwh_load_through_pynq_overlay(boards: Boards, tmp_path) -> None:
    overlay = _handoff_overlay(tmp_path, clock_mhz=125)
    vb = boards.start(None)
    vb.add_overlay(overlay)
    boards.connect(vb)
    units = BoardTarget(overlay=overlay).compute_units(PACKED)
    assert vb.design == "gemm_handoff" and len(units) == 2
    assert vb.fabric.slcr.pl_clock_mhz(0) == 125.0  # pynq programmed FCLK0 from the .hwh
    rng = np.random.default_rng(1)
    a, b = rng.integers(-128, 128, (3, 24), dtype=np.int8), rng.integers(-128, 128, (24, 32), dtype=np.int8)
    assert all(np.array_equal(u.run(a, b), golden_gemm(a, b, PACKED.arith)) for u in units)


def test_tampered_hwh_is_refused_before_download(boards: Boards, tmp_path) -> None:
    overlay = _handoff_overlay(tmp_path, clock_mhz=100)
    hwh = overlay / "gemm_handoff.hwh"
    text = hwh.read_text()
    good = 'NAME="ADDRESS_OFFSET" VALUE="28"'  # b_1: the low word of B's address (0x1c)
    assert text.count(good) == 2  # one per IP
    hwh.write_text(text.replace(good, 'NAME="ADDRESS_OFFSET" VALUE="24"', 1))
    vb = boards.start(None)
    vb.add_overlay(overlay)
    boards.connect(vb)
    with pytest.raises(OverlayError, match=r"IP gemm_i8_packed_0: argument 'b' is at 0x18 in gemm_handoff.hwh but 0x1c"):
        BoardTarget(overlay=overlay).compute_units(PACKED)
    assert vb.design is None  # nothing was downloaded


def test_buffer_addresses_follow_the_buffer_not_its_id(boards: Boards, packed_overlay) -> None:
    """Resident tiles are freed when evicted and Python reuses a dead object's id for the next one: the physical
    address a unit programs must be the live buffer's own (a stale one sent the kernel outside every buffer)."""
    vb = boards.start(packed_overlay)
    boards.connect(vb)
    target = BoardTarget(overlay=packed_overlay)
    board = target.compute_units(PACKED)[0].board
    dead: set[int] = set()  # ids of freed buffers whose addresses the pool has seen
    reused = 0
    for _ in range(40):
        buf = board._allocate(512, np.int32)  # one page, with a live buffer after it: a larger one goes elsewhere
        fence = board._allocate(512, np.int32)
        reused += id(buf) in dead
        assert board.pool.address(buf) == buf.physical_address
        dead.add(id(buf))
        buf.freebuffer()
        del buf
        other = board._allocate(32 * 1024, np.int8)
        reused += id(other) in dead
        assert board.pool.address(other) == other.physical_address
        dead.add(id(other))
        other.freebuffer()
        fence.freebuffer()
        del other, fence
    assert reused  # the case the cache must survive did occur
