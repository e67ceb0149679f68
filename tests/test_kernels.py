"""The bundled kernel library: descriptions, folder layout, and the `kernels` / `csim` commands."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pynqtorch.cli import app
from pynqtorch.hw.kernels import find_kernel, kernels
from pynqtorch.targets.csim import CsimTarget
from pynqtorch.targets.csim.verify import folder_warnings

FIXTURES = Path(__file__).parent / "fixtures" / "kernels"
BUNDLED = ("gemm_i8_dsp", "gemm_i8_fabric", "gemm_i8_packed")
needs_csim = pytest.mark.skipif(CsimTarget.probe() is not None, reason=f"csim unavailable: {CsimTarget.probe()}")


def test_bundled_kernels_are_found_and_valid() -> None:
    found = kernels()
    for name in BUNDLED:
        info = found[name]
        assert info.origin == "bundled" and info.folder.name == name
        for f in (f"{name}.cpp", f"{name}.hpp", f"{name}_tb.cpp", "description.json", "hls_config.cfg", "run_hls.tcl"):
            assert (info.folder / f).is_file(), f
        assert folder_warnings(info) == []
        assert info.desc.hls.part == "xc7z020clg400-1"


@pytest.mark.parametrize("name", ["gemm_i8_dsp", "gemm_i8_fabric"])
def test_fixed_kernels_registers_and_binding(name: str) -> None:
    desc = find_kernel(name).desc
    assert [(a.name, a.role, a.interface, a.ctype, a.offset_int, a.pack) for a in desc.args] == [
        ("in1", "a", "m_axi", "ap_uint<64>*", 0x10, 8), ("in2", "b", "m_axi", "ap_uint<64>*", 0x1C, 8),
        ("out", "c", "m_axi", "int*", 0x28, 1)]
    assert [a.layout for a in desc.args] == ["mk", "nk", "mn"]
    assert desc.control.bundle == "CTRL" and desc.control.ap_ctrl == "0x00"
    assert (desc.tile.m, desc.tile.n, desc.tile.k) == (256, 256, 256) and desc.runtime_dims == []
    assert desc.priority == 0
    source = (find_kernel(name).folder / f"{name}.cpp").read_text()
    impl = "dsp" if name.endswith("dsp") else "fabric"
    assert re.search(rf"#pragma HLS BIND_OP variable=\w+ op=mul impl={impl}\b", source)
    assert "#pragma HLS INTERFACE mode=s_axilite port=return bundle=CTRL" in source


def test_packed_kernel_description() -> None:
    desc = find_kernel("gemm_i8_packed").desc
    assert desc.priority == 10 and desc.runtime_dims == ["m", "n", "k"]
    assert [(a.name, a.ctype, a.pack, a.layout, a.offset_int) for a in desc.args] == [
        ("a", "ap_uint<64>*", 8, "mk", 0x10), ("b", "ap_uint<64>*", 8, "nk", 0x1C), ("c", "int*", 1, "mn", 0x28),
        ("m", "int", 1, "scalar", 0x34), ("n", "int", 1, "scalar", 0x3C), ("k", "int", 1, "scalar", 0x44)]
    # B block on chip: max n*k int8 = 256 KiB, 64 of the 7020's 140 BRAM36.
    assert desc.dim_limit("n") * desc.dim_limit("k") == 256 * 1024


def test_hls_scripts_name_the_kernel() -> None:
    for name in BUNDLED:
        folder = find_kernel(name).folder
        tcl = (folder / "run_hls.tcl").read_text()
        for cmd in ("open_project", "set_top $kernel", "add_files -tb", "open_solution", "set_part xc7z020clg400-1",
                    "create_clock -period 10", "csim_design", "csynth_design", "cosim_design", "export_design"):
            assert cmd in tcl, (name, cmd)
        assert f"set kernel {name}\n" in tcl


def test_kernels_command_lists_bundled_and_user_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "mine" / "my_gemm"
    shutil.copytree(find_kernel("gemm_i8_packed").folder, user)
    raw = json.loads((user / "description.json").read_text())
    raw["name"] = "my_gemm"
    (user / "description.json").write_text(json.dumps(raw))
    monkeypatch.setenv("PYNQTORCH_KERNEL_PATH", str(tmp_path / "mine"))
    res = CliRunner().invoke(app, ["kernels", "--json"])
    assert res.exit_code == 0, res.output
    rows = {k["name"]: k for k in json.loads(res.output)["kernels"]}
    assert set(BUNDLED) | {"my_gemm"} <= set(rows)
    assert rows["my_gemm"]["origin"] == "env" and rows["my_gemm"]["folder"] == str(user.resolve())
    assert rows["gemm_i8_dsp"]["tile"] == {"m": 256, "n": 256, "k": 256} and rows["gemm_i8_dsp"]["op"] == "gemm"
    table = CliRunner().invoke(app, ["kernels"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "my_gemm" in table.output and "256x256x256" in table.output


@needs_csim
@pytest.mark.parametrize(("kernel", "code", "text"), [
    ("gemm_i8_packed", 0, "PASSED"),
    (str(FIXTURES / "gemm_i8_narrow_acc"), 1, "FAIL all 127"),
    (str(FIXTURES / "gemm_i8_null_deref"), 139, "killed by SIGSEGV"),
])
def test_csim_command_returns_the_testbench_exit_code(kernel: str, code: int, text: str) -> None:
    res = CliRunner().invoke(app, ["csim", kernel])
    assert res.exit_code == code, res.output
    assert text in res.output


def test_csim_command_unknown_kernel() -> None:
    res = CliRunner().invoke(app, ["csim", "no_such_kernel"])
    assert res.exit_code == 2 and "unknown kernel 'no_such_kernel'" in res.output
