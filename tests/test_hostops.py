"""The native host passes give exactly what the torch formulation of quantization gives, or decline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pynqtorch import hostops
from pynqtorch.engine.quant import quantize_torch

pytestmark = pytest.mark.skipif(hostops.library() is None, reason="needs a C++ compiler")

CASES = [(-1, True), (-2, True), (-1, False), (-2, False)]


def _layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same values in the layouts operands arrive in."""
    b, r, c = x.shape
    return {
        "contiguous": x,
        "transposed": x.transpose(1, 2).contiguous().transpose(1, 2),
        "sliced": torch.cat([x, x], dim=2)[:, :, ::2],
        "padded rows": torch.nn.functional.pad(x, (0, 3))[:, :, :c],
        "expanded batch": x[:1].expand(b, r, c),
    }


def _same(x: torch.Tensor, dim: int, per_line: bool, qmax: int = 127) -> None:
    got = hostops.quantize(x, dim, per_line, qmax)
    assert got is not None, "the native pass declined a finite float32 operand"
    want = quantize_torch(x, dim, per_line, qmax)
    assert want.bad is None
    assert got[0].dtype == torch.int8 and got[1].dtype == want.scale.dtype == torch.float32
    assert got[1].shape == want.scale.shape
    assert torch.equal(got[0], want.q), f"{int((got[0] != want.q).sum())} int8 values differ"
    assert torch.equal(got[1], want.scale)


@pytest.mark.parametrize(("dim", "per_line"), CASES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 7, 5), (3, 33, 130), (2, 256, 64)])
def test_quantize_matches_torch_bit_for_bit(shape: tuple[int, int, int], dim: int, per_line: bool) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g) * torch.logspace(-3, 3, shape[2])
    for name, view in _layouts(x).items():
        try:
            _same(view, dim, per_line)
        except AssertionError as e:
            raise AssertionError(f"layout {name}: {e}") from None


@pytest.mark.parametrize(("dim", "per_line"), CASES)
def test_quantize_edges_match_torch(dim: int, per_line: bool) -> None:
    big = torch.finfo(torch.float32).max
    x = torch.tensor([[[0.0, -0.0, 0.0, 0.0],             # an all-zero line
                       [big, -big, 1.0, -1e-30],          # the largest finite magnitudes
                       [2.5, -2.5, 0.5, 1.5],             # halves: rounding must go to even
                       [1e-38, -3e-39, 2e-45, 1.0]]])     # subnormals beside a normal amax
    _same(x, dim, per_line)
    halves = torch.arange(-127, 128, dtype=torch.float32).reshape(1, 1, -1) + 0.5
    _same(halves.clamp(max=127.0), dim, per_line)
    _same(torch.randn(1, 9, 11), dim, per_line, qmax=7)  # a narrower kernel


def test_quantize_declines_what_torch_handles() -> None:
    """NaN/Inf, amax needing float64 scales, float64, empty: None, so the torch formulation runs."""
    x = torch.randn(1, 4, 8)
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[0, 2, 3] = bad
        for dim, per_line in CASES:
            assert hostops.quantize(y, dim, per_line, 127) is None
    tiny = torch.full((1, 4, 8), 1e-35)
    assert hostops.quantize(tiny, -1, True, 127) is None
    assert hostops.quantize(x.double(), -1, True, 127) is None
    assert hostops.quantize(torch.empty(1, 0, 8), -1, True, 127) is None


@pytest.mark.parametrize("sa_shape", [(2, 40, 1), (1, 40, 1), ()])
@pytest.mark.parametrize("sb_shape", [(2, 1, 24), (1, 1, 24), ()])
def test_dequantize_matches_torch(sa_shape: tuple[int, ...], sb_shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(1)
    acc = torch.randint(-(1 << 30), 1 << 30, (2, 40, 24), dtype=torch.int32, generator=g)
    sa, sb = torch.rand(sa_shape, generator=g) + 1e-3, torch.rand(sb_shape, generator=g) * 1e-4
    got = hostops.dequantize(acc, sa, sb)
    assert got is not None
    assert torch.equal(got, acc.to(torch.float32).mul_(sa).mul_(sb))


def test_dequantize_declines_other_dtypes_and_layouts() -> None:
    acc = torch.ones(1, 4, 4, dtype=torch.int32)
    s = torch.ones(1, 4, 1)
    assert hostops.dequantize(acc.long(), s, s.transpose(1, 2)) is None
    assert hostops.dequantize(acc.transpose(1, 2), s, s.transpose(1, 2)) is None
    assert hostops.dequantize(acc, s.double(), s.transpose(1, 2)) is None


def test_engine_results_identical_without_native_passes(tmp_path: Path) -> None:
    """A GEMM computed with the native passes equals the one computed in a process where they are off."""
    code = ("import torch, sys\nfrom pynqtorch import engine, hostops\n"
            "g = torch.Generator().manual_seed(5)\n"
            "a, b = torch.randn(3, 70, 300, generator=g), torch.randn(300, 50, generator=g)\n"
            "out = [engine.gemm(a, b), engine.gemm(a, b, weight=True), engine.gemm(a, b.t().contiguous().t()),\n"
            "       engine.gemm(a.half(), b.half()),\n"
            "       engine.gemm(a, b, config=engine.QuantConfig.per_tensor())]\n"
            "print(hostops.status(), file=sys.stderr)\n"
            "torch.save(out, sys.argv[1])\n")
    results = {}
    for flag in ("1", "0"):
        path = tmp_path / f"out{flag}.pt"
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True,
                              env={**os.environ, hostops.ENV: flag})
        assert ("native" in proc.stderr) == (flag == "1"), proc.stderr
        results[flag] = torch.load(path)
    for native, plain in zip(results["1"], results["0"]):
        assert torch.equal(native, plain)


def test_info_says_where_host_passes_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from pynqtorch.cli import app

    res = CliRunner().invoke(app, ["info", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["host_passes"] == "native (C++)"
    monkeypatch.setenv(hostops.ENV, "0")
    res = CliRunner().invoke(app, ["info", "--json"])
    assert json.loads(res.stdout)["host_passes"] == "torch ops (PYNQTORCH_HOSTOPS=0)"
