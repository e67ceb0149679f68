"""`pynqtorch new-kernel` / `new-overlay`: the scaffolded kernel passes `verify` and `csim` unchanged."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import hls4ml
import numpy as np
import pytest
from typer.testing import CliRunner

from pynqtorch.cli import app
from pynqtorch.hw.families import load_description
from pynqtorch.hw.overlay import load_overlay

AP_TYPES = Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")


def new_kernel(tmp_path: Path, *args: str) -> CliRunner:
    r = CliRunner().invoke(app, ["new-kernel", *args, "--dest", str(tmp_path)])
    assert r.exit_code == 0, r.output
    return r


@pytest.mark.parametrize(("tile", "variant"), [(8, "dsp"), (32, "fabric")])
def test_scaffolded_kernel_has_a_consistent_description(tmp_path: Path, tile: int, variant: str) -> None:
    new_kernel(tmp_path, "my_gemm", "--tile", str(tile), "--variant", variant)
    folder = tmp_path / "my_gemm"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["my_gemm.cpp", "my_gemm.hpp", "my_gemm_tb.cpp", "description.json", "hls_config.cfg", "run_hls.tcl"])
    desc = load_description(folder / "description.json")
    assert (desc.name, desc.top) == ("my_gemm", "my_gemm")
    assert (desc.tile.m, desc.tile.n, desc.tile.k) == (tile, tile, tile)
    assert [(a.name, a.offset, a.ctype, a.pack) for a in desc.args] == [
        ("in1", "0x10", "int*", 1), ("in2", "0x1c", "int*", 1), ("out", "0x28", "int*", 1)]
    for src in [*desc.sources, desc.testbench]:
        assert (folder / src).is_file()
    cpp = (folder / "my_gemm.cpp").read_text()
    assert f"impl={variant}" in cpp and f"depth={tile * tile}" in cpp
    assert f"#define MY_GEMM_DIM {tile}" in (folder / "my_gemm.hpp").read_text()
    assert "syn.top=my_gemm" in (folder / "hls_config.cfg").read_text()
    assert "set kernel my_gemm" in (folder / "run_hls.tcl").read_text()
    assert "@" not in "".join(p.read_text() for p in folder.iterdir()), "an unfilled template placeholder"


@needs_gxx
def test_scaffolded_testbench_compiles_and_passes(tmp_path: Path) -> None:
    new_kernel(tmp_path, "tb_gemm", "--tile", "16")
    folder = tmp_path / "tb_gemm"
    exe = tmp_path / "tb"
    subprocess.run(["g++", "-O2", "-std=c++14", "-I", str(AP_TYPES), "-I", str(folder), str(folder / "tb_gemm.cpp"),
                    str(folder / "tb_gemm_tb.cpp"), "-o", str(exe)], check=True, capture_output=True, timeout=300)
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout
    assert r.stdout.splitlines()[-1] == "PASSED"
    assert r.stdout.count("ok   ") == 5


@needs_gxx
def test_scaffolded_kernel_passes_verify_and_csim_unchanged(tmp_path: Path) -> None:
    new_kernel(tmp_path, "gemm_new", "--tile", "16", "--variant", "fabric")
    folder = str(tmp_path / "gemm_new")
    v = CliRunner().invoke(app, ["verify", folder, "--trials", "2", "--json"])
    assert v.exit_code == 0, v.output
    result = json.loads(v.stdout)
    assert result["ok"] and result["kernel"] == "gemm_new" and len(result["trials"]) >= 4
    assert all(t["mismatches"] == 0 for t in result["trials"])
    c = CliRunner().invoke(app, ["csim", folder])
    assert c.exit_code == 0, c.output
    assert "PASSED" in c.output


@needs_gxx
def test_scaffolded_kernel_computes_the_golden_gemm_through_the_csim_target(tmp_path: Path) -> None:
    from pynqtorch.hw.kernels import find_kernel
    from pynqtorch.targets.base import golden_gemm
    from pynqtorch.targets.csim import CsimTarget

    new_kernel(tmp_path, "gemm_gold", "--tile", "8")
    info = find_kernel(tmp_path / "gemm_gold")
    (unit, *_) = CsimTarget().compute_units(info)
    rng = np.random.default_rng(7)
    a = rng.integers(-128, 128, (8, 8), dtype=np.int8)
    b = rng.integers(-128, 128, (8, 8), dtype=np.int8)
    assert np.array_equal(unit.run(a, b), golden_gemm(a, b, info.desc.arith))
    unit.close()


@pytest.mark.parametrize(("args", "message"), [
    (["9lives"], "kernel name '9lives' is not a C identifier"),
    (["my-gemm"], "kernel name 'my-gemm' is not a C identifier"),
    (["while"], "kernel name 'while' is not a C identifier"),
    (["int"], "kernel name 'int' is not a C identifier"),
    (["ok_name", "--tile", "48"], "tile 48 must be a power of two between 1 and 256"),
    (["ok_name", "--tile", "512"], "tile 512 must be a power of two"),
    (["ok_name", "--variant", "lut"], "--variant must be 'dsp' or 'fabric'"),
])
def test_bad_kernel_requests_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    r = CliRunner().invoke(app, ["new-kernel", *args, "--dest", str(tmp_path)])
    assert r.exit_code == 2
    assert message in " ".join(r.output.split())
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "taken.cpp").write_text("// mine")
    r = CliRunner().invoke(app, ["new-kernel", "taken", "--dest", str(tmp_path)])
    assert r.exit_code == 2 and "already exists; refusing to overwrite" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["new-overlay", "taken", "--kernel", "gemm_i8_dsp", "--dest", str(tmp_path)])
    assert r.exit_code == 2 and "already exists; refusing to overwrite" in " ".join(r.output.split())
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["taken.cpp"]
    assert (tmp_path / "taken" / "taken.cpp").read_text() == "// mine"


def test_new_overlay_for_chosen_kernels(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["new-overlay", "duo", "-k", "gemm_i8_packed", "-k", "gemm_i8_packed",
                                 "--dest", str(tmp_path), "--clock-mhz", "142"])
    assert r.exit_code == 0, r.output
    spec = load_overlay(tmp_path / "duo" / "overlay.json")
    assert spec.clock_mhz == 142 and spec.bitstream == "duo.bit"
    assert [(ip.instance, ip.kernel, ip.base, ip.range, ip.hp_port) for ip in spec.ips] == [
        ("gemm_i8_packed_0", "gemm_i8_packed", "0x40000000", "0x10000", "HP0"),
        ("gemm_i8_packed_1", "gemm_i8_packed", "0x40010000", "0x10000", "HP1")]
    assert (tmp_path / "duo" / "block_design.tcl").is_file() and (tmp_path / "duo" / "run_vivado.tcl").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["ov", "--kernel", "no_such_kernel"], "unknown kernel 'no_such_kernel'"),
    (["2ov", "--kernel", "gemm_i8_dsp"], "overlay name '2ov' is not a C identifier"),
    (["ov"], "Missing option '--kernel'"),
])
def test_bad_overlay_requests_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    r = CliRunner().invoke(app, ["new-overlay", *args, "--dest", str(tmp_path)])
    assert r.exit_code == 2
    assert message in " ".join(r.output.split())
    assert list(tmp_path.iterdir()) == []


@needs_gxx
@pytest.mark.parametrize("op", ["gelu", "silu", "log_softmax"])
def test_scaffolded_op_kernel_passes_its_testbench_and_verify(tmp_path: Path, op: str) -> None:
    new_kernel(tmp_path, f"my_{op}", "--op", op)
    folder = tmp_path / f"my_{op}"
    desc = load_description(folder / "description.json")
    assert desc.op == ("rows" if op == "log_softmax" else "map") and desc.aten[0].endswith(op)
    tb = CliRunner().invoke(app, ["csim", str(folder)])
    assert tb.exit_code == 0 and ("0 of" in tb.output or "0 elements" in tb.output), tb.output
    res = CliRunner().invoke(app, ["verify", str(folder), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["ok"] and data["warnings"] == [] and {"NaN mixed in", "sweep [-8, 8]"} & {
        t["case"] for t in data["trials"]}


def test_scaffold_refuses_an_op_it_cannot_write(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["new-kernel", "my_erf", "--op", "erf", "--dest", str(tmp_path)])
    assert r.exit_code != 0 and "--op 'erf' is not one the scaffold writes" in r.output
    assert not (tmp_path / "my_erf").exists()
