"""Cycle model: per-call prediction and whole-GEMM calls/time, against hand-computed values."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from pynqtorch import engine
from pynqtorch.cli import app
from pynqtorch.hw.kernels import find_kernel
from pynqtorch.hw.perf import call_cycles, gemm_perf


def test_dsp_tile_is_196608_cycles() -> None:
    desc = find_kernel("gemm_i8_dsp").desc
    # 65,536 cycles to load B plus 256 rows x (256 to load the row + 256 outputs).
    assert call_cycles(desc, 256, 256, 256) == 65_536 + 256 * (256 + 256) == 196_608
    p = gemm_perf(desc, 256, 256, 256)
    assert (p.calls, p.cycles, p.clock_mhz) == (1, 196_608, 100.0)
    assert p.total_s == pytest.approx(1.96608e-3)


def test_fixed_kernel_pads_every_dim_to_the_tile() -> None:
    desc = find_kernel("gemm_i8_fabric").desc
    p = gemm_perf(desc, 1, 300, 1000, clock_mhz=125, host_us=150)
    assert p.calls == 1 * 2 * 4
    assert p.cycles == 8 * 196_608
    assert p.kernel_s == pytest.approx(8 * 196_608 / 125e6)
    assert p.total_s == pytest.approx(8 * 196_608 / 125e6 + 8 * 150e-6)


def test_packed_kernel_splits_runtime_dims() -> None:
    desc = find_kernel("gemm_i8_packed").desc
    # n*k/8 + m*(k/8 + n*k/128 + n)
    assert call_cycles(desc, 256, 256, 256) == 8_192 + 256 * (32 + 512 + 256) == 212_992
    assert call_cycles(desc, 1, 256, 1024) == 32_768 + (128 + 2_048 + 256) == 35_200
    p = gemm_perf(desc, 1, 300, 1000)
    # n: 256 + 44 -> 48; k: 1000 -> one call of 1000 (a multiple of 8)
    assert sorted((s.m, s.n, s.k, s.count) for s in p.shapes) == [(1, 48, 1000, 1), (1, 256, 1000, 1)]
    assert p.cycles == (256 * 125 + 125 + 2_000 + 256) + (48 * 125 + 125 + 375 + 48)
    big = gemm_perf(desc, 3000, 512, 2048)
    assert big.calls == 3 * 2 * 2  # m: 1024+1024+952, n: 2x256, k: 2x1024
    with pytest.raises(ValueError, match="m=0"):
        gemm_perf(desc, 0, 16, 8)


def test_perf_command() -> None:
    res = CliRunner().invoke(app, ["perf", "gemm_i8_dsp", "--m", "256", "--n", "256", "--k", "256"],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "196,608" in res.output and "1 kernel calls" in res.output and "1.966 ms" in res.output
    res = CliRunner().invoke(app, ["perf", "gemm_i8_dsp", "--m", "512", "--n", "256", "--k", "768",
                                   "--clock-mhz", "200", "--host-us", "100", "--json"])
    data = json.loads(res.output)
    assert data["calls"] == 6 and data["cycles"] == 6 * 196_608
    assert data["total_s"] == pytest.approx(6 * 196_608 / 200e6 + 6 * 100e-6)


@pytest.mark.parametrize("kernel", ["gemm_i8_dsp", "gemm_i8_packed"])
@pytest.mark.parametrize("m,n,k", [(1, 300, 1000), (3000, 512, 2048), (257, 33, 4100)])
def test_cycle_model_counts_the_calls_the_engine_makes(fresh_target, kernel: str, m: int, n: int, k: int) -> None:
    """One tiler: the model predicts exactly the kernel calls of the engine on hardware-sized calls."""
    desc = find_kernel(kernel).desc
    engine.use("ref", kernel=kernel, large_calls=False)
    engine.gemm(torch.randn(m, k), torch.randn(k, n))
    assert engine.stats()["counters"]["kernel_calls"] == gemm_perf(desc, m, n, k).calls
