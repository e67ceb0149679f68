"""`pynqtorch verify`: description validation, C simulation vs golden model, non-zero exit on mismatch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pynqtorch.cli import app
from pynqtorch.hw.kernels import find_kernel
from pynqtorch.targets.csim import CsimTarget
from pynqtorch.targets.csim.verify import run_trials

pytestmark = pytest.mark.skipif(CsimTarget.probe() is not None, reason=f"csim unavailable: {CsimTarget.probe()}")

NARROW = Path(__file__).parent / "fixtures" / "kernels" / "gemm_i8_narrow_acc"


@pytest.mark.parametrize(("kernel", "trials"), [("gemm_i8_dsp", 1), ("gemm_i8_fabric", 1), ("gemm_i8_packed", 6)])
def test_verify_passes_the_bundled_kernels(kernel: str, trials: int) -> None:
    res = CliRunner().invoke(app, ["verify", kernel, "--trials", str(trials), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["ok"] and data["warnings"] == []
    cases = [t["case"] for t in data["trials"]]
    assert cases[:4] == ["all -128", "all 127", "-128 by 127", "alternating signs"]
    assert cases.count("random") == trials
    assert all(t["mismatches"] == 0 and t["max_diff"] == 0 for t in data["trials"])


def test_verify_covers_runtime_shapes_of_the_packed_kernel() -> None:
    shapes = {(t.m, t.n, t.k) for t in run_trials(find_kernel("gemm_i8_packed"), trials=6, seed=3)}
    assert {(4, 256, 1024), (1, 32, 8), (1, 256, 1024), (1024, 32, 8)} <= shapes
    assert len(shapes) >= 5


def test_verify_catches_the_narrow_accumulator() -> None:
    res = CliRunner().invoke(app, ["verify", str(NARROW), "--trials", "2"], env={"COLUMNS": "200"})
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.output and "trials mismatch" in res.output
    assert "[0, 0]: -8160 vs 516128" in res.output  # all 127: 32*127*127 wrapped to 16 bits
    data = json.loads(CliRunner().invoke(app, ["verify", str(NARROW), "--trials", "0", "--json"]).output)
    by_case = {t["case"]: t for t in data["trials"]}
    assert not data["ok"]
    assert by_case["all 127"]["mismatches"] == 32 * 32 and by_case["all 127"]["first"] == [0, 0, -8160, 516128]


def test_verify_small_inputs_do_not_expose_the_bug() -> None:
    """The fixture is wrong only where the sums leave 16 bits: the edge cases are what catch it."""
    import numpy as np

    from pynqtorch.targets.base import golden_gemm
    from pynqtorch.targets.csim import CsimLibrary, CsimUnit

    info = find_kernel(NARROW)
    unit = CsimUnit("narrow", CsimLibrary(info))
    a = np.random.default_rng(0).integers(-8, 8, (32, 32), dtype=np.int8)
    assert np.array_equal(unit.run(a, a), golden_gemm(a, a, info.desc.arith))


def test_verify_rejects_bad_descriptions_naming_file_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(find_kernel("gemm_i8_dsp").folder, folder)
    raw = json.loads((folder / "description.json").read_text())
    raw["args"][1]["offset"] = "0xZZ"
    raw["tile"]["k"] = 0
    (folder / "description.json").write_text(json.dumps(raw))
    res = CliRunner().invoke(app, ["verify", str(folder)], env={"COLUMNS": "500"})
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert f"{folder / 'description.json'}: field 'args[1].offset'" in out
    assert "field 'tile.k'" in out


def test_verify_reports_signature_mismatch(tmp_path: Path) -> None:
    folder = tmp_path / "renamed"
    shutil.copytree(find_kernel("gemm_i8_dsp").folder, folder)
    raw = json.loads((folder / "description.json").read_text())
    raw["top"] = "gemm_i8_other"
    (folder / "description.json").write_text(json.dumps(raw))
    res = CliRunner().invoke(app, ["verify", str(folder)], env={"COLUMNS": "500"})
    assert res.exit_code == 2
    assert "no definition of function 'gemm_i8_other'" in " ".join(res.output.split())
