"""Bad kernel descriptions and bad selection settings: clear errors naming what was wrong, the rest keeps working."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import pynqtorch
from pynqtorch.cli import app
from pynqtorch.hw.description import DescriptionError
from pynqtorch.hw.families import load_description
from pynqtorch.hw.kernels import find_kernel, kernel_errors, kernels
from pynqtorch.targets import registry

PACKED = find_kernel("gemm_i8_packed")
BASE = json.loads((PACKED.folder / "description.json").read_text())


def _write(folder: Path, mutate) -> Path:
    raw = copy.deepcopy(BASE)
    mutate(raw)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "description.json").write_text(json.dumps(raw))
    return folder / "description.json"


@pytest.mark.timeout(60)  # a hang here is the bug
@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(perf={"cycles": "n*k +"}), "field 'perf': Value error, cycles: 'n*k +' is not an expression"),
    (lambda d: d.update(perf={"cycles": "9**9**9**9"}), ("field 'perf': Value error, cycles: cycle model "
                                                          "'9**9**9**9': powers need a constant exponent from 0 to 4")),
    (lambda d: d.update(perf={"cycles": "(m*n*k)**4*(m*n*k)**4*(m*n*k)**4"}), (
        "perf.cycles: cycle model '(m*n*k)**4*(m*n*k)**4*(m*n*k)**4' at m=1, n=32, k=8: 7.92e+28 exceeds 2**64")),
    (lambda d: d.update(perf={"cycles": "k // (n - 32)"}), ("perf.cycles: cycle model 'k // (n - 32)' at m=1, "
                                                             "n=32, k=8: integer division or modulo by zero")),
    (lambda d: d.update(perf={"cycles": "m - 2*n"}), "perf.cycles: -63 cycles at m, n, k = (1, 32, 8) is negative"),
    (lambda d: d.update(perf={"cycles": "max()"}), "perf.cycles: cycle model 'max()' at m=1, n=32, k=8:"),
    (lambda d: d.update(perf={"cycles": "'x' * 9"}), "cycles: cycle model \"'x' * 9\": constant 'x' is not a number"),
    (lambda d: d.update(perf={"cycles": "k.real"}), ("field 'perf': Value error, cycles: cycle model 'k.real': "
                                                      "Attribute is not allowed")),
    (lambda d: d["perf"]["terms"].update(compute="m*n*k // 0"), ("perf.terms.compute: cycle model 'm*n*k // 0' at "
                                                                  "m=1, n=32, k=8")),
    (lambda d: d["max"].update(k=4), "max.k: 4 must be a multiple of tile.k = 8"),
    (lambda d: d["max"].update(k=1020), "max.k: 1020 must be a multiple of tile.k = 8"),
    (lambda d: d["arith"].update(operand_bits=16), ("args[0].pack: packed operands travel in 8-bit lanes, but "
                                                   "arith.operand_bits is 16")),
    (lambda d: d["arith"].update(acc_bits=64), ("args[2]: results come back one per word, but 'int*' (pack 1) "
                                               "cannot hold an arith.acc_bits = 64 accumulator")),
    (lambda d: d["args"][0].update(ctype="ap_uint<32>*"), ("args[0].ctype: a 32-bit word of 'ap_uint<32>*' cannot "
                                                          "hold 8 operand(s) of 8 bits")),
    (lambda d: d["args"][0].update(ctype="double*"), "args[0].ctype: C type 'double*' is not supported"),
])
def test_bad_description_names_file_and_field(tmp_path: Path, mutate, message: str) -> None:
    path = _write(tmp_path / "bad", mutate)
    with pytest.raises(DescriptionError) as e:
        load_description(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value), str(e.value)


def test_the_bundled_descriptions_pass_the_checks() -> None:
    for info in kernels().values():
        assert load_description(info.folder / "description.json") == info.desc


def test_a_broken_user_kernel_is_skipped_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = _write(tmp_path / "good_gemm", lambda d: d.update(name="good_gemm")).parent
    for f in ("gemm_i8_packed.cpp", "gemm_i8_packed.h"):
        if (PACKED.folder / f).exists():
            (good / f).write_bytes((PACKED.folder / f).read_bytes())
    _write(tmp_path / "broken_gemm", lambda d: (d.update(name="broken_gemm"), d["perf"]["terms"].update(compute="n*k +")))
    monkeypatch.setenv("PYNQTORCH_KERNEL_PATH", str(tmp_path))
    with pytest.warns(UserWarning, match="kernel 'broken_gemm' skipped: .*terms.compute"):
        found = kernels()
    assert "good_gemm" in found and "gemm_i8_packed" in found and "broken_gemm" not in found
    assert any("broken_gemm" in e and "terms.compute" in e for e in kernel_errors())
    res = CliRunner().invoke(app, ["kernels", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert "good_gemm" in {k["name"] for k in out["kernels"]}
    assert any("broken_gemm" in e and "is not an expression" in e for e in out["errors"])
    table = CliRunner().invoke(app, ["kernels"], env={"COLUMNS": "300"})
    assert "broken: kernel 'broken_gemm' skipped" in table.output
    # GEMMs keep running on the bundled kernel
    pynqtorch.use(target="ref", kernel="gemm_i8_packed")
    a = torch.randint(-50, 50, (5, 7))
    assert torch.equal((a.to("zynq") @ a.T.to("zynq")).cpu(), a @ a.T)


def test_perf_command_with_a_runaway_model_is_an_error_not_a_hang(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad", lambda d: d.update(perf={"cycles": "9**9**9**9"}))
    res = CliRunner().invoke(app, ["perf", str(path.parent), "--m", "64", "--n", "64", "--k", "64"])
    assert res.exit_code == 2 and "perf" in res.output and "constant exponent from 0 to 4" in res.output, res.output


def test_missing_kernel_path_entry_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "not_here"
    monkeypatch.setenv("PYNQTORCH_KERNEL_PATH", os.pathsep.join([str(missing), str(PACKED.folder.parent)]))
    with pytest.warns(UserWarning, match=f"PYNQTORCH_KERNEL_PATH entry '{missing}' does not exist"):
        assert "gemm_i8_packed" in kernels()
    res = CliRunner().invoke(app, ["info", "--json"])
    assert res.exit_code == 0 and str(missing) in res.output


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from pynqtorch.cli import app; app()", *args],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **env}, check=False)


def test_unknown_target_in_the_environment_fails_naming_the_valid_ones() -> None:
    res = _cli("info", PYNQTORCH_TARGET="nonsense")
    assert res.returncode == 2, res.stdout + res.stderr
    err = " ".join(res.stderr.split())
    assert "PYNQTORCH_TARGET='nonsense' is not a target" in err
    for name in registry.target_names():
        assert f"'{name}'" in err


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_target_counts_as_unset(value: str) -> None:
    res = _cli("info", "--json", PYNQTORCH_TARGET=value)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["active_target"] == registry.DEFAULT_TARGET


def test_use_rejects_an_unknown_target(monkeypatch: pytest.MonkeyPatch) -> None:
    before = registry.active()
    with pytest.raises(ValueError, match="unknown target 'nonsense'; choose one of"):
        pynqtorch.use(target="nonsense")
    assert registry.current() is before
    registry.reset()
    monkeypatch.setenv(registry.ENV_TARGET, "nonsense")
    with pytest.raises(ValueError, match="PYNQTORCH_TARGET='nonsense' is not a target"):
        registry.active()
    monkeypatch.setenv(registry.ENV_TARGET, "")
    assert registry.active().name == registry.DEFAULT_TARGET
