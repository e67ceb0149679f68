"""Resource estimates: hand-computed small kernels, every bundled overlay within 80 % of the XC7Z020, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pynqtorch.cli import app
from pynqtorch.hw.fit import (
    AVAILABLE,
    LIMIT,
    Resources,
    bram18_for,
    estimate_kernel,
    estimate_overlay,
    memory,
    multiplier,
)
from pynqtorch.hw.kernels import find_kernel, kernels
from pynqtorch.hw.overlay import overlays
from pynqtorch.targets.base import dsp_pair_products

HEADER = """#include "ap_int.h"
#define SIZE 1024
typedef ap_int<8> op_t;
"""


def write_kernel(folder: Path, body: str, *, args: str = "const int *in1, const int *in2, int *out") -> Path:
    """A kernel folder whose top `small` has `body`; the description is copied from gemm_i8_dsp's."""
    folder.mkdir(parents=True, exist_ok=True)
    desc = json.loads((find_kernel("gemm_i8_dsp").folder / "description.json").read_text())
    desc.update(name="small", top="small", sources=["small.cpp", "small.hpp"], testbench=None)
    (folder / "description.json").write_text(json.dumps(desc))
    (folder / "small.hpp").write_text(HEADER)
    (folder / "small.cpp").write_text(f'#include "small.hpp"\nvoid small({args}) {{\n{body}\n}}\n')
    return folder


def items(folder: Path) -> dict[str, Resources]:
    return {it.what: it.res for it in estimate_kernel(find_kernel(folder)).items}


def test_bram18_shapes() -> None:
    assert bram18_for(256, 8) == 1      # 2K x 9
    assert bram18_for(1024, 64) == 4    # 512 x 36: 2 deep x 2 wide
    assert bram18_for(512, 72) == 2
    assert bram18_for(16384, 1) == 1
    assert bram18_for(4096, 32) == 8    # 8 x (512 x 36) = 8 x (4K x 4)
    assert memory(64, 8) == (Resources(LUT=4 * 3), "auto: 512 bits <= 1024 -> LUTRAM (64x8)")
    assert memory(32, 6, "lutram")[0] == Resources(LUT=4)


def test_partitioned_array_hand_computed(tmp_path: Path) -> None:
    """A 1024 x 8-bit array cut into 4 cyclic banks: 4 banks of 256 x 8 = 2,048 bits > 1,024 -> 4 BRAM18."""
    body = """    op_t buf[SIZE];
#pragma HLS ARRAY_PARTITION variable=buf type=cyclic factor=4 dim=1
    op_t small_buf[64];
    op_t regs[16];
#pragma HLS ARRAY_PARTITION variable=regs type=complete
    op_t forced[SIZE];
#pragma HLS BIND_STORAGE variable=forced type=ram_2p impl=lutram"""
    got = items(write_kernel(tmp_path / "small", body))
    assert got["array buf"] == Resources(BRAM18=4)
    assert got["array small_buf"] == Resources(LUT=4 * 1 * 3)         # 512 bits: one RAM64M per 3 bits
    assert got["array regs"] == Resources(FF=16 * 8)
    assert got["array forced"] == Resources(LUT=4 * 16 * 3)           # 1024 deep: 16 x RAM64M per 3 bits


def test_multipliers_hand_computed(tmp_path: Path) -> None:
    """Unroll x implementation: BIND_OP wins; without it 8 x 8 goes to LUTs and 16 x 16 to a DSP48E1."""
    body = """    op_t a[8];
    op_t b[8];
    ap_int<16> w[4];
    ap_int<16> v[4];
    ap_int<16> p8;
    ap_int<32> p16;
outer:
    for (int i = 0; i < 2; i++) {
#pragma HLS PIPELINE II=1
        for (int l = 0; l < 8; l++) {
            ap_int<16> pd = a[l] * b[l];
#pragma HLS BIND_OP variable=pd op=mul impl=dsp
            p8 = a[l] * b[l];
        }
        for (int q = 0; q < 4; q++) {
            p16 = w[q] * v[q];
        }
    }"""
    res = estimate_kernel(find_kernel(write_kernel(tmp_path / "small", body)))
    byline = {it.what.split(" (")[0]: it for it in res.items if it.what.startswith("product")}
    assert byline["product pd"].res.DSP == 8 and "8 x [BIND_OP impl=dsp" in byline["product pd"].rule
    assert byline["product p8"].res.DSP == 0 and byline["product p8"].res.LUT == 8 * (64 + 8 + 8 + 2)
    assert "no BIND_OP: 8x8 bits, both <= 10 -> LUT" in byline["product p8"].rule
    assert byline["product p16"].res.DSP == 4 and "wider than 10 -> DSP48E1" in byline["product p16"].rule
    assert multiplier((25, 8), "dsp")[0].DSP == 1 and multiplier((32, 32), "dsp")[0].DSP == 2 * 2


def test_maxi_buffers_hand_computed(tmp_path: Path) -> None:
    """Width x burst x outstanding: 64 bits x 64 x 4 = 16 Kbit -> 512 x 36 x 2 = 2 BRAM18 (read port)."""
    body = """#pragma HLS INTERFACE mode=m_axi port=in1 bundle=gmem0 max_read_burst_length=64 num_read_outstanding=4
#pragma HLS INTERFACE mode=m_axi port=out bundle=gmem1 max_write_burst_length=8 num_write_outstanding=2"""
    got = items(write_kernel(tmp_path / "small", body, args="const ap_uint<64> *in1, const int *in2, int *out"))
    assert got["m_axi gmem0"].BRAM18 == 2
    assert got["m_axi gmem1"].BRAM18 == 0 and got["m_axi gmem1"].LUT > 650  # 8 x 2 x 32 bits: LUTRAM


def test_dsp_pair_trick_is_exact_for_every_int8_triple() -> None:
    v = np.arange(-128, 128, dtype=np.int64)
    x, y0, y1 = (a.ravel() for a in np.meshgrid(v, v, v, indexing="ij"))
    lo, hi = dsp_pair_products(x, y0, y1)
    assert np.array_equal(lo, x * y0) and np.array_equal(hi, x * y1)


@pytest.mark.parametrize("name", sorted(overlays()))
def test_every_bundled_overlay_fits_within_80_percent(name: str) -> None:
    info = overlays()[name]
    est = estimate_overlay(name, [(ip.instance, info.kernels[ip.instance], ip.hp_port) for ip in info.ips])
    used = est.total.as_dict()
    assert all(used[r] <= LIMIT * AVAILABLE[r] for r in AVAILABLE), used
    assert est.fits()


def test_default_design_is_the_fastest_fitting_one() -> None:
    from pynqtorch.hw.kernels import preferred_kernel
    from pynqtorch.hw.perf import gemm_perf

    gemms = [k for k in kernels().values() if k.desc.op == "gemm"]
    fastest = min(gemms, key=lambda k: gemm_perf(k.desc, 1024, 1024, 1024).cycles)
    assert preferred_kernel().name == fastest.name == "gemm_i8_packed"
    assert estimate_kernel(fastest).total.DSP == 128  # 256 int8 MACs per cycle, two per DSP48E1


def test_fit_command_overlay_json_and_exit_codes(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["fit", "gemm_packed", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert set(data) == {"part", "resources", "fits", "per_ip"}
    assert data["part"] == "xc7z020clg400-1" and data["fits"] is True
    assert data["resources"]["DSP"] == {"used": data["resources"]["DSP"]["used"], "available": 220}
    assert {"gemm_i8_packed_0", "processing_system7_0", "axi_smc_hp0"} <= set(data["per_ip"])
    assert sum(ip["BRAM18"] for ip in data["per_ip"].values()) == data["resources"]["BRAM18"]["used"]
    res = CliRunner().invoke(app, ["fit", "gemm_i8_fabric"])
    assert res.exit_code == 0 and "estimate" in res.output
    assert CliRunner().invoke(app, ["fit", "no_such_thing"]).exit_code == 2
    # a kernel that does not fit: the old fully unrolled 256-MAC dot with 256 banks of B
    body = """    op_t b_tile[256][256];
#pragma HLS ARRAY_PARTITION variable=b_tile dim=1 type=complete
    op_t a_row[256];
    for (int j = 0; j < 256; j++) {
#pragma HLS PIPELINE II=1
        for (int kk = 0; kk < 256; kk++) {
            ap_int<16> prod = a_row[kk] * b_tile[kk][j];
#pragma HLS BIND_OP variable=prod op=mul impl=dsp
        }
    }"""
    big = write_kernel(tmp_path / "small", body)
    res = CliRunner().invoke(app, ["fit", str(big), "--json"])
    assert res.exit_code == 1
    data = json.loads(res.output)
    assert data["resources"]["DSP"]["used"] == 256 and data["resources"]["BRAM18"]["used"] >= 256
    assert data["fits"] is False


def test_fit_from_a_folder_with_only_bit_and_hwh(tmp_path: Path) -> None:
    """IPs come from the .hwh (HLS MODULEs), kernels from the kernel path."""
    from pynqtorch.hw.overlay import find_overlay
    from pynqtorch.sim.handoff import hwh_xml, placeholder_bit

    spec = find_overlay("gemm_dual")
    folder = tmp_path / "built"
    folder.mkdir()
    (folder / "gemm_dual.hwh").write_text(hwh_xml(spec))
    (folder / "gemm_dual.bit").write_bytes(placeholder_bit(spec))
    res = CliRunner().invoke(app, ["fit", str(folder), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert {"gemm_i8_dsp_0", "gemm_i8_fabric_0"} <= set(data["per_ip"])
    bundled = json.loads(CliRunner().invoke(app, ["fit", "gemm_dual", "--json"]).output)
    assert data["resources"] == bundled["resources"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert CliRunner().invoke(app, ["fit", str(empty)]).exit_code == 2


def test_kernels_command_shows_estimates() -> None:
    data = json.loads(CliRunner().invoke(app, ["kernels", "--json"]).output)
    packed = next(k for k in data["kernels"] if k["name"] == "gemm_i8_packed")
    assert packed["estimate"]["DSP"] == 128


def test_unknown_storage_impl_is_an_error(tmp_path: Path) -> None:
    body = """    op_t buf[SIZE];
#pragma HLS BIND_STORAGE variable=buf type=ram_2p impl=uram"""
    folder = write_kernel(tmp_path / "small", body)
    res = CliRunner().invoke(app, ["fit", str(folder)])
    assert res.exit_code == 2 and "uram" in res.output
    shutil.rmtree(folder)


def test_float_operators_hand_computed(tmp_path: Path) -> None:
    """One core per float operator site: BIND_OP impl where given, else the core's default."""
    body = """    float x[4];
    for (int i = 0; i < 4; i++) {
#pragma HLS UNROLL
        float t = x[i] * 0.5f;
#pragma HLS BIND_OP variable=t op=fmul impl=fabric
        float e = std::exp(t) + 1.0f;
    }"""
    got = items(write_kernel(tmp_path / "small", body))
    assert got["fmul t (line 6)"] == Resources(LUT=4 * 700, FF=4 * 450)
    assert got["exp e (line 8)"] == Resources(DSP=4 * 7, LUT=4 * 900, FF=4 * 1100)
    assert got["fadd e (line 8)"] == Resources(DSP=4 * 2, LUT=4 * 220, FF=4 * 350)
