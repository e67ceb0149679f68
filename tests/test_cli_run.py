"""`pynqtorch run`: JSON output, exit codes for user mistakes, the global --debug option."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from pynqtorch.cli import app
from pynqtorch.cli import run as run_module
from pynqtorch.targets import registry

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("fresh_target")


@pytest.fixture(autouse=True)
def _restore_excepthook() -> Iterator[None]:
    hook = sys.excepthook
    yield
    sys.excepthook = hook


def test_run_digits_json_schema() -> None:
    res = runner.invoke(app, ["run", "digits", "--target", "ref", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["target"] == "ref" and out["example"] == "digits"
    for key in ("fp32_top1", "zynq_top1", "per_tensor_top1"):
        assert isinstance(out[key], float) and 0.0 <= out[key] <= 1.0
    assert abs(out["zynq_top1"] - out["fp32_top1"]) <= 0.005
    assert set(out["report"]) == {"accelerated", "cpu", "engine", "fallback_reasons"}
    assert isinstance(out["fallback_ops"], dict) and all(isinstance(v, int) for v in out["fallback_ops"].values())
    assert out["offload"] == "gemm" and "aten::convolution_overrideable" in out["ops_on_target"]


def test_run_rejects_an_offload_no_kernel_implements() -> None:
    res = runner.invoke(app, ["run", "digits", "--target", "ref", "--offload", "erf"])
    assert res.exit_code == 2 and "no map/rows kernel implements aten::erf" in res.output


def test_run_digits_table() -> None:
    res = runner.invoke(app, ["run", "digits", "-t", "ref"])
    assert res.exit_code == 0, res.output
    assert "pynqtorch report" in res.stdout and "CPU fp32" in res.stdout and "per_tensor" in res.stdout
    assert "zynq per_group_32" in res.stdout and "per_group_128 / per_row" in res.stdout


def test_run_minilm_json_schema() -> None:
    res = runner.invoke(app, ["run", "minilm", "--target", "ref", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["target"] == "ref"
    assert isinstance(out["mean_cosine"], float) and isinstance(out["min_cosine"], float)
    assert out["mean_cosine"] >= 0.995 and out["min_cosine"] >= 0.99
    assert out["per_tensor"]["mean_cosine"] < out["mean_cosine"]


@pytest.mark.parametrize(("args", "message"), [
    (["run", "mnist"], "unknown example 'mnist'"),
    (["run", "digits", "--target", "fpga"], "unknown target 'fpga'"),
    (["bench", "everything"], "unknown benchmark suite 'everything'"),
    (["bench", "gemm", "--target", "fpga"], "unknown target 'fpga'"),
    (["verify", "no_such_kernel"], "no_such_kernel"),
    (["perf", "no_such_kernel", "--m", "8", "--n", "8", "--k", "8"], "no_such_kernel"),
])
def test_user_mistakes_exit_2_without_traceback(args: list[str], message: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.stderr
    assert "Traceback" not in res.output


def test_unavailable_target_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYNQ_REMOTE_DEVICES", raising=False)
    reason = registry.unavailable_reason("board")
    if reason is None:
        pytest.skip("a board is reachable here")
    res = runner.invoke(app, ["run", "digits", "--target", "board"])
    assert res.exit_code == 2
    assert "target 'board' is unavailable" in res.stderr


def test_debug_option_controls_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.invoke(app, ["run", "mnist"]).exit_code == 2
    assert sys.excepthook is run_module._short_excepthook
    try:
        raise RuntimeError("kernel exploded")
    except RuntimeError as e:
        sys.excepthook(type(e), e, e.__traceback__)
    err = capsys.readouterr().err
    assert "RuntimeError: kernel exploded" in err and "--debug" in err and "Traceback" not in err
    assert runner.invoke(app, ["--debug", "run", "mnist"]).exit_code == 2
    assert sys.excepthook is sys.__excepthook__


def test_demo_json_reports_the_accelerated_forward() -> None:
    res = runner.invoke(app, ["demo", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["target"] == "ref" and out["kernel"] == "gemm_i8_packed"
    assert out["relative_error"] < 0.02 and out["argmax_agreement"] >= 0.9
    acc = out["report"]["accelerated"]
    assert acc["aten::convolution_overrideable"]["calls"] == 2 and acc["aten::addmm"]["calls"] == 2
    assert out["report"]["cpu"]["aten::relu"]["calls"] == 3  # fallbacks are reported too
