"""`pynqtorch bench`: GEMM sweep and model latency rows, JSON files and non-empty PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pynqtorch.bench import gemm, models
from pynqtorch.cli import app
from pynqtorch.hw.kernels import find_kernel
from pynqtorch.hw.perf import BOARD_HOST, gemm_perf, workload_perf
from pynqtorch.targets import registry

runner = CliRunner()
CSIM_REASON = registry.unavailable_reason("csim")
PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("fresh_target")


def _png_ok(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG) and len(data) > 5000


def test_bench_gemm_quick_json_and_plots(tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", "gemm", "--quick", "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)["gemm"]
    rows = out["rows"]
    assert {(r["n"], r["dtype"]) for r in rows} == {(n, d) for n in gemm.QUICK_SIZES for d in gemm.DTYPES}
    for r in rows:
        assert r["target"] == "ref" and r["cpu_ms"] > 0 and r["zynq_ms"] > 0 and r["board_ms"] > 0
        if r["dtype"] in ("int8", "int32"):
            assert r["exact_pct"] == 100.0 and r["max_abs_diff"] == 0 and r["l2_rel"] == 0
        else:
            assert r["exact_pct"] is None and 0 < r["l2_rel"] < 0.02
    assert next(r for r in rows if r["dtype"] == "int8")["path"].startswith("engine.gemm")
    assert max(r["limb_products"] for r in rows if r["dtype"] == "int32") > 1  # wide ints use limbs
    assert json.loads((tmp_path / "gemm.json").read_text())["rows"] == rows
    for name in ("gemm_time.png", "gemm_error.png"):
        assert _png_ok(tmp_path / name)


def test_gemm_board_prediction_is_the_cycle_model_with_host_stages() -> None:
    registry.use("ref", kernel="gemm_i8_dsp")
    row = gemm.measure("float32", 64, 1)
    desc = find_kernel("gemm_i8_dsp").desc
    p = gemm_perf(desc, 64, 64, 64, clock_mhz=100, host=BOARD_HOST)
    assert row["board_kernel_ms"] == pytest.approx(p.kernel_s * 1e3)
    # one padded 256-tile call: 300 µs + (64 KiB A + 64 KiB B) / 250 MB/s + 256 KiB C / 250 MB/s
    host = 300e-6 + (2 * 65_536) / 250e6 + 262_144 / 250e6
    assert row["board_ms"] == pytest.approx((p.kernel_s + host) * 1e3)


def test_gemm_errors_against_exact_product() -> None:
    a = torch.tensor([[1, 2], [3, 4]], dtype=torch.int32)
    b = torch.eye(2, dtype=torch.int32)
    wrong = a.clone()
    wrong[0, 0] = 2
    e = gemm.errors(wrong, a, b)
    assert e["exact_pct"] == 75.0 and e["max_abs_diff"] == 1.0 and e["l2_rel"] == pytest.approx(1 / 30 ** 0.5)


def test_gemm_shapes_recorded_for_prediction() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, groups=1), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 5 * 5, 4)).eval()
    with torch.no_grad(), models.GemmShapes() as rec:
        model(torch.randn(2, 3, 5, 5))
        torch.bmm(torch.randn(3, 4, 5), torch.randn(3, 5, 6))
    assert rec.shapes == [(1, 2 * 25, 8, 3 * 9), (1, 2, 4, 200), (3, 4, 6, 5)]
    # under inference_mode composites arrive whole: linear, grouped conv2d, attention
    with torch.inference_mode(), models.GemmShapes() as whole:
        model(torch.randn(2, 3, 5, 5))
        torch.nn.functional.conv2d(torch.randn(2, 4, 5, 5), torch.randn(6, 2, 3, 3), groups=2)
        q = torch.randn(2, 3, 7, 8)
        torch.nn.functional.scaled_dot_product_attention(q, torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, 4))
    assert whole.shapes == [(1, 50, 8, 27), (1, 2, 4, 200), (2, 2 * 9, 3, 18), (6, 7, 9, 8), (6, 7, 4, 9)]
    desc = find_kernel("gemm_i8_packed").desc
    apart = sum(b * gemm_perf(desc, m, n, k, clock_mhz=100, host=BOARD_HOST).total_s for b, m, n, k in rec.shapes)
    p = workload_perf(desc, rec.shapes, 100, BOARD_HOST)
    got = models.predicted_board_s(desc, rec.shapes)
    assert got == pytest.approx(p["kernel_s"] + p["host_s"]) and got < apart  # the grouped conv shares calls


@pytest.mark.skipif(CSIM_REASON is not None, reason=f"csim unavailable: {CSIM_REASON}")
def test_bench_all_quick(tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", "all", "--quick", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "GEMM n³" in res.stdout and "model latency" in res.stdout and "MLP 784-512-512-10" in res.stdout
    rows = json.loads((tmp_path / "models.json").read_text())["rows"]
    assert {(r["model"], r["target"]) for r in rows} == {
        (m, t) for m in ("digits-cnn", "mlp-784-512-512-10", "minilm-l6") for t in ("cpu", "ref", "csim")}
    for r in rows:
        assert "error" not in r, r
        if r["target"] != "cpu":
            assert r["ms"] > 0 and r["board_ms"] > 0 and r["rel_err"] < 0.1
    # csim computes exactly what ref computes
    by = {(r["model"], r["target"]): r for r in rows}
    for m in ("digits-cnn", "mlp-784-512-512-10", "minilm-l6"):
        assert by[(m, "csim")]["rel_err"] == pytest.approx(by[(m, "ref")]["rel_err"], rel=1e-6)
    assert json.loads((tmp_path / "engine.json").read_text())["gemm"]
    for name in ("gemm_time.png", "gemm_error.png", "models_latency.png"):
        assert _png_ok(tmp_path / name)
