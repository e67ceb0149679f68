"""Cycle model: named AXI-aware terms per call, whole-GEMM calls/time, validation, against hand-computed values."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pynqtorch import engine
from pynqtorch.cli import app
from pynqtorch.hw.description import DescriptionError
from pynqtorch.hw.families import load_description
from pynqtorch.hw.kernels import find_kernel
from pynqtorch.hw.perf import BOARD_HOST, HostModel, call_breakdown, call_cycles, gemm_perf

# call_overhead 20, read_latency 40, write_response 40, depth 10 (description.json perf.params)
DSP_256 = {"start_finish": 20, "load_b": 8_192 + 40, "load_a": 256 * (40 + 32), "compute": 256 * 512,
           "row_drain": 256 * (10 + 40)}


def test_dsp_tile_terms() -> None:
    desc = find_kernel("gemm_i8_dsp").desc
    assert call_breakdown(desc, 256, 256, 256) == DSP_256
    assert call_cycles(desc, 256, 256, 256) == sum(DSP_256.values()) == 170_556
    p = gemm_perf(desc, 256, 256, 256)
    assert (p.calls, p.cycles, p.clock_mhz, p.breakdown) == (1, 170_556, 100.0, DSP_256)
    assert p.total_s == pytest.approx(1.70556e-3)


def test_fixed_kernel_pads_every_dim_to_the_tile() -> None:
    desc = find_kernel("gemm_i8_fabric").desc
    p = gemm_perf(desc, 1, 300, 1000, clock_mhz=125, host_us=150)
    assert p.calls == 1 * 2 * 4
    assert p.cycles == 8 * 170_556
    assert p.breakdown == {term: 8 * c for term, c in DSP_256.items()}
    assert p.kernel_s == pytest.approx(8 * 170_556 / 125e6)
    assert p.total_s == pytest.approx(8 * 170_556 / 125e6 + 8 * 150e-6)


def packed_cycles(m: int, n: int, k: int) -> int:
    # start 20; load B n*k/8 + 40; 2 cycles per 64-beat burst of B; m*(n/32)*(k/8) compute;
    # C stall when n words per row outrun the row's compute; fill 40 + k/8 + 12 + 32 + 40.
    compute = m * (n // 32) * (k // 8)
    return 20 + n * k // 8 + 40 + 2 * -(-n * k // 512) + compute + max(0, m * n - compute) + 40 + k // 8 + 84


def test_packed_kernel_splits_runtime_dims() -> None:
    desc = find_kernel("gemm_i8_packed").desc
    assert call_cycles(desc, 256, 256, 256) == packed_cycles(256, 256, 256) == 74_200
    assert call_breakdown(desc, 1, 256, 1024) == {"start_finish": 20, "load_b": 32_808, "b_bursts": 1_024,
                                                  "compute": 1_024, "c_stall": 0, "fill": 252}
    assert call_breakdown(desc, 64, 32, 8)["c_stall"] == 64 * 32 - 64  # writing C bounds tiny-k calls
    p = gemm_perf(desc, 1, 300, 1000)
    # n: 256 + 44 -> 64; k: 1000 -> one call of 1000 (a multiple of 8)
    assert sorted((s.m, s.n, s.k, s.count) for s in p.shapes) == [(1, 64, 1000, 1), (1, 256, 1000, 1)]
    assert p.cycles == packed_cycles(1, 256, 1000) + packed_cycles(1, 64, 1000)
    big = gemm_perf(desc, 3000, 512, 2048)
    assert big.calls == 3 * 2 * 2  # m: 1024+1024+952, n: 2x256, k: 2x1024
    with pytest.raises(ValueError, match="m=0"):
        gemm_perf(desc, 0, 32, 8)


def test_default_design_meets_the_1024_goal() -> None:
    """The default kernel: >= 200 MAC/cycle and 1024^3 in <= 0.1 s at 100 MHz with the host stages."""
    desc = find_kernel("gemm_i8_packed").desc
    p = gemm_perf(desc, 1024, 1024, 1024, clock_mhz=100, host=BOARD_HOST)
    assert p.calls == 4 and p.cycles == 4 * packed_cycles(1024, 256, 1024)
    assert 1024 ** 3 / p.cycles >= 200
    # host stages: 4 x (300 µs + (1 MiB A + 256 KiB B) / 250 MB/s + 1 MiB C / 250 MB/s)
    host = 4 * (300e-6 + (1 << 20 | 1 << 18) / 250e6 + (1 << 20) / 250e6)
    assert p.host_s == pytest.approx(host)
    assert p.total_s == pytest.approx(p.cycles / 100e6 + host) and p.total_s <= 0.1
    slow = gemm_perf(desc, 1024, 1024, 1024, clock_mhz=100, host=HostModel(fixed_us=0, copy_mb_s=1e9,
                                                                            collect_mb_s=1e9))
    assert slow.host_s == pytest.approx(4 * (2 * (1 << 20) + (1 << 18)) / 1e15)


def test_perf_command() -> None:
    res = CliRunner().invoke(app, ["perf", "gemm_i8_dsp", "--m", "256", "--n", "256", "--k", "256"],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "170,556" in res.output and "1 kernel calls" in res.output and "1.706 ms" in res.output
    res = CliRunner().invoke(app, ["perf", "gemm_i8_dsp", "--m", "512", "--n", "256", "--k", "768",
                                   "--clock-mhz", "200", "--host-us", "100", "--json"])
    data = json.loads(res.output)
    assert data["calls"] == 6 and data["cycles"] == 6 * 170_556
    assert data["breakdown"] == {term: 6 * c for term, c in DSP_256.items()}
    assert data["total_s"] == pytest.approx(6 * 170_556 / 200e6 + 6 * 100e-6)
    res = CliRunner().invoke(app, ["perf", "gemm_i8_packed", "--m", "1024", "--n", "1024", "--k", "1024",
                                   "--board-host", "--json"])
    data = json.loads(res.output)
    assert data["host_s"] == pytest.approx(gemm_perf(find_kernel("gemm_i8_packed").desc, 1024, 1024, 1024,
                                                     host=BOARD_HOST).host_s)


def _with_perf(tmp_path: Path, perf: object) -> Path:
    folder = tmp_path / "k"
    shutil.copytree(find_kernel("gemm_i8_packed").folder, folder)
    desc = json.loads((folder / "description.json").read_text())
    desc["perf"] = perf
    (folder / "description.json").write_text(json.dumps(desc))
    return folder / "description.json"


@pytest.mark.parametrize(("perf", "field", "why"), [
    ({"terms": {"load": "n*k//8 +"}}, "perf", "terms.load: 'n\\*k//8 \\+' is not an expression"),
    ({"terms": {"load": "__import__('os')"}}, "perf", "only \\['ceil', 'max', 'min'\\] may be called"),
    ({"terms": {"load": "n*latency"}}, "perf", "terms.load: .*unknown name 'latency'"),
    ({"terms": {"load": "k**k"}}, "perf", "powers need a constant exponent from 0 to 4"),
    ({"terms": {"load": "k**'2'"}}, "perf", "powers need a constant exponent from 0 to 4"),
    ({"terms": {"load": "k + 'x'"}}, "perf", "constant 'x' is not a number"),
    ({"terms": {"load": "n - k*k"}}, "<root>", "perf.terms.load: -\\d+ cycles at m, n, k = .* negative or unbounded"),
    ({"terms": {"load": "(k**2)**2 * n"}}, "<root>", "perf.terms.load: \\d+ cycles at m, n, k = \\(1024, 256, 1024\\)"),
    ({"terms": {"load": "k//(n - 32)"}}, "<root>", "perf.terms.load: cycle model .* division or modulo by zero"),
    ({"terms": {"load": "n"}, "cycles": "n"}, "perf", "either 'terms' .* or 'cycles'"),
    ({"terms": {"load": "n"}, "params": {"m": 3}}, "perf", "params.m: not a usable name"),
    ({"terms": {"load": "n*lat"}, "params": {"lat": -1}}, "perf", "params.lat: -1 is outside"),
])
def test_bad_cycle_models_are_rejected_naming_file_and_field(tmp_path: Path, perf: object, field: str,
                                                              why: str) -> None:
    path = _with_perf(tmp_path, perf)
    with pytest.raises(DescriptionError, match=f"{path}: field '{field}': .*{why}"):
        load_description(path)


def test_single_expression_form_still_loads(tmp_path: Path) -> None:
    desc = load_description(_with_perf(tmp_path, {"cycles": "k*n + m*(k + n)"}))
    assert desc.perf.breakdown(2, 32, 8) == {"cycles": 8 * 32 + 2 * 40}


@pytest.mark.parametrize("kernel", ["gemm_i8_dsp", "gemm_i8_packed"])
@pytest.mark.parametrize("m,n,k", [(1, 300, 1000), (3000, 512, 2048), (257, 33, 4100)])
def test_cycle_model_counts_the_calls_the_engine_makes(fresh_target, kernel: str, m: int, n: int, k: int) -> None:
    """One tiler: the model predicts exactly the kernel calls of the engine on hardware-sized calls."""
    desc = find_kernel(kernel).desc
    engine.use("ref", kernel=kernel, large_calls=False)
    engine.gemm(torch.randn(m, k), torch.randn(k, n))
    assert engine.stats()["counters"]["kernel_calls"] == gemm_perf(desc, m, n, k).calls
