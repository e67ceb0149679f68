"""The engine benchmark's pieces run and report consistent structure (no timing assertions)."""

from __future__ import annotations

import io

from rich.console import Console

from pynqtorch.bench import engine as bench
from pynqtorch.targets import registry


def test_benchmark_pieces_and_rendering() -> None:
    registry.reset()
    try:
        gemm = bench.gemm_vs_torch([64], 1, "gemm_i8_packed")
        assert gemm[0]["n"] == 64 and gemm[0]["ratio"] > 0
        host = bench.host_path(512, 1, "gemm_i8_dsp", 2)
        assert host["tiles"] == 2 * 2 * 2 and host["phases_ms"]["run"] >= 0
        errors = {r["scheme"]: r for r in bench.scheme_errors("gemm_i8_packed")}
        assert errors["per_channel w, per_row a (default)"]["skewed"] < errors["per_tensor (w+a)"]["skewed"]
        assert errors["per_group_32 w, per_row a"]["outliers"] < errors["per_channel w, per_row a (default)"]["outliers"]
        mlp = bench.mlp(1, "gemm_i8_packed", batch=4)
        assert mlp["rel_err"] < 0.05
        out = io.StringIO()
        bench.render({"threads": 1, "gemm": gemm, "host": host, "errors": list(errors.values()), "mlp": mlp},
                     Console(file=out, width=120))
        assert "ms/tile" in out.getvalue() and "MLP 784-512-512-10" in out.getvalue()
    finally:
        registry.reset()


def test_device_models_row() -> None:
    registry.reset()
    try:
        rows = bench.device_models(1, "gemm_i8_packed")
        assert [r["model"].split()[0] for r in rows] == ["MLP", "CNN"]
        assert all(r["rel_err"] < 0.05 and r["ratio"] > 0 for r in rows)
        out = io.StringIO()
        bench.render({"threads": 1, "gemm": [], "host": bench.host_path(256, 1, "gemm_i8_dsp", 1), "errors": [],
                      "mlp": bench.mlp(1, "gemm_i8_packed", batch=2), "device": rows}, Console(file=out, width=120))
        assert "zynq device" in out.getvalue()
    finally:
        registry.reset()
