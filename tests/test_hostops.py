"""The native host passes give exactly what the torch formulation of quantization gives, or decline."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pynqtorch import engine, hostops
from pynqtorch.engine.quant import quantize_torch
from pynqtorch.hostops.patches import Patches


@pytest.fixture(autouse=True)
def _native() -> None:
    """These tests compare the native passes with torch: they need them built (with the session's cache)."""
    if hostops.library() is None:
        pytest.skip("needs a C++ compiler")


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
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 7, 5), (3, 33, 130), (2, 256, 64), (4, 300, 130)])
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
    big = torch.randn(3, 200, 300)  # passes on several threads report a NaN from any of them
    big[2, 199, 299] = float("nan")
    for dim, per_line in CASES:
        assert hostops.quantize(big, dim, per_line, 127) is None
    assert hostops.im2col_quantize(_patches(big.unsqueeze(1), (3, 3)), True, 127) is None
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


def test_dequantize_large_on_several_threads_matches_torch() -> None:
    g = torch.Generator().manual_seed(2)
    acc = torch.randint(-(1 << 30), 1 << 30, (3, 300, 200), dtype=torch.int32, generator=g)
    sa, sb = torch.rand(3, 300, 1, generator=g), torch.rand(1, 1, 200, generator=g)
    assert torch.equal(hostops.dequantize(acc, sa, sb), acc.to(torch.float32).mul_(sa).mul_(sb))


@pytest.mark.parametrize("layout", ["contiguous", "channels_first", "channels_last"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_dequantize_into_a_layout_with_bias_matches_torch(layout: str, with_bias: bool) -> None:
    """Written into any layout (a convolution's [N, C, H, W] result seen as [N, H*W, C]), the bias added as a separate
    rounding: bit for bit torch's dequantization followed by ``torch.add``; small and threaded sizes, channels-first
    results transposed in 8 x 8 blocks with rows and columns left over, per-tensor scales of either operand, weight
    scales per batch entry."""
    g = torch.Generator().manual_seed(4)
    for n, hw, c, per_tensor in ((2, 15, 7, ""), (4, 400, 48, ""), (1, 80, 8, ""), (3, 135, 13, ""), (2, 70, 17, "a"),
                                 (2, 45, 24, "b"), (1, 40, 9, "ab"), (3, 35, 16, "n")):
        acc = torch.randint(-(1 << 30), 1 << 30, (n, hw, c), dtype=torch.int32, generator=g)
        sa = torch.rand(n, hw, 1, generator=g) + 1e-3
        sb = torch.rand(n if "n" in per_tensor else 1, 1, c, generator=g) * 1e-4
        sa, sb = sa[0, 0, 0] if "a" in per_tensor else sa, sb[0, 0, 0] if "b" in per_tensor else sb
        bias = torch.randn(c, generator=g) * 1e4 if with_bias else None
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        result = torch.empty((n, c, 5, hw // 5), memory_format=fmt)
        out = (torch.empty(n, hw, c) if layout == "contiguous" else result.permute(0, 2, 3, 1).flatten(1, 2))
        assert hostops.dequantize(acc, sa, sb, out, bias) is out
        want = acc.to(torch.float32).mul_(sa).mul_(sb)
        assert torch.equal(out, want if bias is None else torch.add(want, bias))
    assert hostops.dequantize(acc, sa, sb, torch.empty(n, hw, c + 1)) is None  # the wrong shape: declined
    assert hostops.dequantize(acc, sa, sb, out, torch.ones(2 * c)[::2]) is None  # a strided bias: declined


def test_dequantize_declines_other_dtypes_and_layouts() -> None:
    acc = torch.ones(1, 4, 4, dtype=torch.int32)
    s = torch.ones(1, 4, 1)
    assert hostops.dequantize(acc.long(), s, s.transpose(1, 2)) is None
    assert hostops.dequantize(acc.transpose(1, 2), s, s.transpose(1, 2)) is None
    assert hostops.dequantize(acc, s.double(), s.transpose(1, 2)) is None



@pytest.mark.parametrize("sb_max", [1e-3, 1.0, 7.5])
def test_dequantize_declines_exactly_where_float32_could_overflow(sb_max: float) -> None:
    """The native pass evaluates `Scheme.dequantize`'s float64 guard itself: it declines (and the engine takes
    the float64 path) exactly where ``(2**31 - 1) * max(sa) * max(1, max(sb)) >= FLT_MAX``, at the boundary too."""
    f32max = torch.finfo(torch.float32).max
    acc = torch.ones(2, 3, 4, dtype=torch.int32)
    sb = torch.full((2, 1, 4), sb_max / 2)
    sb[1, 0, 2] = sb_max
    bound = torch.tensor(f32max / ((1 << 31) - 1) / max(1.0, float(sb.max())))
    near = [torch.nextafter(bound, torch.tensor(0.0)), bound, torch.nextafter(bound, torch.tensor(math.inf))]
    for v in [*near, torch.tensor(1e20), torch.tensor(1e30), torch.tensor(math.inf)]:
        sa = torch.full((2, 3, 1), 1e-3)
        sa[1, 2, 0] = v
        guard = ((1 << 31) - 1) * float(sa.max()) * max(1.0, float(sb.max())) >= f32max
        got = hostops.dequantize(acc, sa, sb)
        assert (got is None) == (guard or not math.isfinite(float(v))), float(v)
        if got is not None:
            assert torch.equal(got, acc.to(torch.float32).mul_(sa).mul_(sb))

def test_engine_results_identical_without_native_passes(tmp_path: Path) -> None:
    """A GEMM computed with the native passes equals the one computed in a process where they are off (also a
    bound weight's small product with its additions, one native pass with them on)."""
    code = ("import torch, sys\nfrom pynqtorch import engine, hostops\n"
            "g = torch.Generator().manual_seed(5)\n"
            "a, b = torch.randn(3, 70, 300, generator=g), torch.randn(300, 50, generator=g)\n"
            "out = [engine.gemm(a, b), engine.gemm(a, b, weight=True), engine.gemm(a, b.t().contiguous().t()),\n"
            "       engine.gemm(a.half(), b.half()),\n"
            "       engine.gemm(a, b, config=engine.QuantConfig.per_tensor()),\n"
            "       engine.bind(b)(a[0, :2], b[0], a[1, :2, :50].contiguous())]\n"
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


def _patches(x: torch.Tensor, k: tuple[int, int], stride=(1, 1), padding=(0, 0), dilation=(1, 1),
             groups: int = 1) -> Patches:
    h, w = x.shape[2:]
    out = tuple((size + 2 * p - d * (kk - 1) - 1) // s + 1
                for size, p, d, kk, s in zip((h, w), padding, dilation, k, stride))
    return Patches(x, k, stride, padding, dilation, groups, out)


CONVS = [  # (N, C, H, W), kernel, stride, padding, dilation, groups
    ((2, 3, 9, 7), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((1, 1, 8, 8), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((3, 8, 10, 6), (3, 2), (2, 1), (0, 2), (1, 2), 2),
    ((2, 6, 7, 7), (3, 3), (1, 1), (2, 2), (2, 2), 6),    # depthwise, dilated, padded beyond the kernel
    ((1, 4, 1, 20), (1, 5), (1, 3), (0, 2), (1, 1), 1),   # conv1d as height 1
    ((2, 5, 6, 6), (6, 6), (1, 1), (0, 0), (1, 1), 1),    # one window per image
    ((1, 2, 5, 5), (1, 1), (3, 3), (0, 0), (1, 1), 1),    # stride skipping pixels: per-tensor amax from windows
    ((8, 16, 16, 16), (3, 3), (1, 1), (1, 1), (1, 1), 1),  # large enough to run on several threads
    ((4, 32, 12, 12), (3, 3), (1, 1), (1, 1), (1, 1), 32), # depthwise, large
    ((4, 1, 28, 28), (5, 5), (1, 1), (2, 2), (1, 1), 1),   # one channel: walked by output positions
    ((2, 1, 9, 11), (3, 2), (2, 3), (2, 1), (2, 1), 1),    # one channel, strided, dilated, padded
    ((3, 24, 5, 7), (1, 1), (1, 1), (0, 0), (1, 1), 1),    # 1x1: images as single rows of pixels when planar
    ((2, 7, 9, 9), (1, 1), (2, 2), (1, 1), (1, 1), 1),     # 1x1 strided and padded: zero rows at the border
    ((8, 16, 32, 32), (1, 1), (1, 1), (0, 0), (1, 1), 1),  # 1x1, large enough to run on several threads
    # plain convolutions from a zero-padded channels-last copy, kernel rows as runs of kw * C floats:
    ((1, 2, 7, 9), (3, 3), (1, 1), (1, 1), (1, 1), 1),     # runs of 6 (< 8), one image: items are blocks of rows
    ((3, 4, 6, 10), (2, 3), (1, 3), (1, 2), (1, 2), 1),    # dilated width: one run of C per pixel
    ((2, 3, 5, 6), (3, 3), (1, 1), (3, 2), (1, 1), 1),     # padding beyond the kernel: windows of zeros only
    ((5, 8, 9, 9), (1, 3), (2, 1), (0, 1), (1, 1), 1),     # runs of 24: whole vectors
    ((1, 3, 64, 64), (7, 7), (2, 2), (3, 3), (1, 1), 1),   # ResNet's stem on one image
    ((4, 6, 14, 14), (5, 5), (1, 1), (0, 0), (1, 1), 1),   # LeNet's conv2
    ((4, 700, 6, 48), (3, 1), (1, 1), (1, 0), (1, 1), 1),  # wide rows: bands of a few output rows each
]


@pytest.mark.parametrize("per_line", [True, False])
@pytest.mark.parametrize("conv", CONVS, ids=[str(c[0]) + str(c[1]) for c in CONVS])
def test_im2col_quantize_matches_quantizing_the_matrix(conv: tuple, per_line: bool) -> None:
    shape, k, stride, padding, dilation, groups = conv
    g = torch.Generator().manual_seed(shape[1])
    x = torch.randn(shape, generator=g) * torch.logspace(-2, 2, shape[-1])
    x[0, 0, 0, 0] = 40.0  # with stride 3 this pixel is in a window; (0, 1) is not
    x.view(-1)[1] = 1e4
    for layout in (x, x.contiguous(memory_format=torch.channels_last), x.half().float(),
                   x.transpose(2, 3).contiguous().transpose(2, 3)):  # W-major planes: odd strides
        p = _patches(layout, k, stride, padding, dilation, groups)
        got = hostops.im2col_quantize(p, per_line, 127)
        assert got is not None
        want = quantize_torch(p.materialize(), -1, per_line, 127)
        assert got[0].shape == want.q.shape == p.shape
        assert torch.equal(got[0], want.q) and torch.equal(got[1], want.scale)


@pytest.mark.parametrize("kernel", [(3, 3), (1, 5)])
def test_im2col_quantize_declines_nonfinite_and_tiny_windows_only(kernel: tuple[int, int]) -> None:
    """A NaN, Inf or tiny (float64-scale) value in a window makes the native pass decline (the engine then quantizes
    the matrix with torch, which marks the rows); one in a pixel no window reads changes nothing."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, 8, 8, generator=g)
    for layout in (lambda t: t, lambda t: t.contiguous(memory_format=torch.channels_last)):
        for value in (float("nan"), float("inf"), 1e-35):
            bad = x.clone()
            bad[1, :, 2:7, 2:8] = 0.0  # the value is alone in its windows (the tiny case)
            bad[1, 2, 3, 5] = value  # read by both kernels (stride 2, padding 1)
            assert hostops.im2col_quantize(_patches(layout(bad), kernel, (2, 2), (1, 1)), True, 127) is None
            unread = x.clone()
            unread[0, 1, 7, :] = value  # stride 2 without padding: row and column 7 are in no window
            unread[1, 0, :, 7] = value
            p = _patches(layout(unread), kernel, (2, 2))
            got, want = hostops.im2col_quantize(p, True, 127), quantize_torch(p.materialize(), -1, True, 127)
            assert got is not None and want.bad is None
            assert torch.equal(got[0], want.q) and torch.equal(got[1], want.scale)


@pytest.mark.parametrize("case", ["native", "nan", "per_group", "half"])
def test_engine_conv_patches_into_the_result_layout_with_bias(case: str) -> None:
    """A plain convolution's product written by the engine into the result's layout with the bias equals the
    product followed by torch's add into that layout, bit for bit: in the dequantization's native pass, and on the
    paths that do not take it (NaN rows, a grouped weight scheme, float16)."""
    g = torch.Generator().manual_seed(9)
    x, w, bias = torch.randn(2, 5, 9, 9, generator=g), torch.randn(45, 7, generator=g), torch.randn(7, generator=g)
    config = engine.QuantConfig(weights="per_group_32") if case == "per_group" else None
    if case == "nan":
        x[1, 2, 3, 4] = float("nan")
    if case == "half":
        x, w, bias = x.half(), w.half(), bias.half()
    p = _patches(x, (3, 3), padding=(1, 1))
    for fmt in (torch.contiguous_format, torch.channels_last):
        for b in (None, bias):
            result = torch.empty((2, 7, 9, 9), dtype=x.dtype, memory_format=fmt)
            out = result.permute(0, 2, 3, 1).flatten(1, 2)
            assert engine.gemm(p, w, weight=True, owner=w, version=0, config=config, bias=b, out=out) is out
            want = engine.gemm(p, w, weight=True, owner=w, version=0, config=config).view(2, 81, 7)
            want = want if b is None else torch.add(want, b)
            assert torch.equal(out.nan_to_num(), want.nan_to_num()) and torch.equal(out.isnan(), want.isnan())
    with pytest.raises(ValueError, match="one group"):
        engine.gemm(p, w, out=torch.empty(2, 80, 7))
    with pytest.raises(ValueError, match="Patches only"):
        engine.gemm(torch.randn(3, 45), w, out=torch.empty(3, w.shape[1]))
    with pytest.raises(ValueError, match="bias="):  # a bias for a 2-D product has its columns
        engine.gemm(torch.randn(3, 45), w, bias=bias[:-1])


def test_engine_conv_patches_equal_the_materialized_matrix() -> None:
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(2, 4, 9, 9, generator=g), torch.randn(2, 18, 5, generator=g)
    p = _patches(x, (3, 3), (2, 1), (1, 1), (1, 1), 2)
    assert torch.equal(engine.gemm(p, w), engine.gemm(p.materialize(), w))
    p1 = _patches(x, (3, 3), padding=(1, 1))
    w1 = torch.randn(36, 7, generator=g)
    assert torch.equal(engine.gemm(p1, w1, weight=True), engine.gemm(p1.materialize()[0], w1))
    x[1, 2, 3, 4] = float("nan")  # NaN rows: the native pass declines, torch's positions result
    p1 = _patches(x, (3, 3), padding=(1, 1))
    want = p1.materialize()[0] @ w1
    got = engine.gemm(p1, w1)
    assert torch.equal(got.isnan(), want.isnan()) and got.isnan().any()
    with pytest.raises(RuntimeError, match=r"need a weight matrix \[1, 36, O\] or \[36, O\]"):
        engine.gemm(p1, w1[:20])


def test_compiler_without_openmp_builds_single_threaded_passes(tmp_path: Path) -> None:
    """A compiler that rejects -fopenmp still gets the library built (one thread), with the same results."""
    cxx = tmp_path / "cxx"
    cxx.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && { echo "no OpenMP" >&2; exit 1; }; done\n'
                   'exec g++ "$@"\n')
    cxx.chmod(0o755)
    code = ("import torch\nfrom pynqtorch import hostops\nfrom pynqtorch.engine.quant import quantize_torch\n"
            "x = torch.randn(2, 300, 200)\nq, s = hostops.quantize(x, -1, True, 127)\n"
            "want = quantize_torch(x, -1, True, 127)\nassert torch.equal(q, want.q) and torch.equal(s, want.scale)\n"
            "print(hostops.build())\n")
    env = {**os.environ, "CXX": str(cxx), "PYNQTORCH_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    lib = Path(out.strip().splitlines()[-1])
    linked = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, check=True).stdout
    assert lib.is_file() and "gomp" not in linked


def test_rows_gemm_takes_its_weight_once_and_declines_other_operands() -> None:
    """`RowsGemm` checks its weight when made (contiguous float32 [K, N], 1 or N scales) and declines, with None,
    operands of another K, dtype or layout, additions of the wrong shape, and rows it cannot quantize."""
    b, sb = torch.randint(-127, 128, (16, 8)).float(), torch.rand(8) + 0.1
    with pytest.raises(ValueError, match="float32"):
        hostops.RowsGemm(b.t(), sb, True, 127)
    with pytest.raises(ValueError, match="scales"):
        hostops.RowsGemm(b, sb[:3], True, 127)
    rows = hostops.RowsGemm(b, sb, True, 127)
    a = torch.randn(2, 16)
    assert rows(a) is not None
    nan = a.clone()
    nan[1, 3] = float("nan")
    for bad in (torch.randn(2, 15), a.double(), torch.randn(16, 2).t(), nan, a[:0]):
        assert rows(bad) is None
    assert rows(a, add=torch.randn(2, 7)) is None and rows(a, bias=torch.randn(8).double()) is None


def _depthwise_by_parts(p: Patches, wq: torch.Tensor, sb: torch.Tensor, bias: torch.Tensor | None,
                        channels_last: bool) -> torch.Tensor:
    """The depthwise convolution as the general path computes it: `im2col_quantize`, the exact product, `dequantize`,
    then the bias added while copied into the output layout (ops/conv.py)."""
    g, _, m = wq.shape
    n = p.x.shape[0]
    qa, sa = hostops.im2col_quantize(p, True, 127)
    acc = torch.bmm(qa.double(), wq.double()).to(torch.int32)  # exact: |sums| < 2**53
    c = hostops.dequantize(acc.contiguous(), sa, sb.reshape(-1).expand(g * m).reshape(g, 1, m).contiguous())
    out = torch.empty((n, g * m, *p.out), memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    prod = c.reshape(g, n, *p.out, m).permute(1, 0, 4, 2, 3)
    dst = out.view(n, g, m, *p.out)
    if bias is None:
        dst.copy_(prod)
    else:
        torch.add(prod, bias.view(1, g, m, 1, 1), out=dst)
    return out


DEPTHWISE = [  # (N, C, H, W), kernel, stride, padding, dilation, output channels per group
    ((2, 16, 20, 21), (3, 3), (1, 1), (1, 1), (1, 1), 1),   # rows of 8 adjacent pixels
    ((2, 16, 21, 33), (3, 3), (2, 2), (0, 0), (1, 1), 1),   # every other pixel
    ((3, 24, 9, 9), (7, 7), (1, 1), (3, 3), (1, 1), 1),     # mostly padding
    ((2, 12, 11, 10), (3, 5), (2, 1), (2, 1), (2, 1), 2),   # dilated, two outputs per channel
    ((1, 20, 3, 4), (3, 3), (1, 1), (1, 1), (1, 1), 1),     # small planes: lanes over channels
    ((2, 1, 12, 12), (5, 5), (1, 1), (2, 2), (1, 1), 6),    # one input channel (LeNet's conv1)
    ((2, 9, 6, 6), (6, 6), (1, 1), (0, 0), (1, 1), 1),      # one window per plane
    ((1, 3, 9, 23), (3, 3), (3, 3), (1, 0), (1, 1), 3),     # stride 3: gathered pixels; rows of 7 (< 8) outputs
    ((2, 2, 8, 8), (3, 3), (2, 2), (0, 0), (1, 1), 5),      # the last pixel column in no window; 5 = 4 + 1 outputs
    ((1, 1, 6, 40), (2, 3), (1, 1), (0, 1), (1, 3), 9),     # dilated width, rows of 34 outputs; 9 = 4 + 4 + 1
    ((1, 1, 33, 33), (33, 33), (1, 1), (0, 0), (1, 1), 2),  # k = 1089: integer sums (beyond exact float ones)
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("conv", DEPTHWISE, ids=[str(c[0]) + str(c[1]) + str(c[2]) for c in DEPTHWISE])
def test_depthwise_conv_equals_the_general_passes(conv: tuple, bias: bool) -> None:
    """`hostops.depthwise_conv` equals quantize-patches / exact product / dequantize / bias add bit for bit, in both
    output layouts, for contiguous, channels-last and W-major inputs."""
    shape, k, stride, padding, dilation, mult = conv
    gen = torch.Generator().manual_seed(shape[1] * 7 + mult)
    x = torch.randn(shape, generator=gen) * torch.logspace(-2, 2, shape[-1])
    x.view(-1)[5] = 1e4
    c = shape[1]
    wq = torch.randint(-127, 128, (c, k[0] * k[1], mult), generator=gen, dtype=torch.int8)
    sb = torch.rand(c * mult, generator=gen) + 0.01
    b = torch.randn(c * mult, generator=gen) if bias else None
    for layout in (x, x.contiguous(memory_format=torch.channels_last), x.transpose(2, 3).contiguous().transpose(2, 3)):
        p = _patches(layout, k, stride, padding, dilation, c)
        for channels_last in (False, True):
            got = hostops.depthwise_conv(p, wq, sb, b, channels_last, 127)
            want = _depthwise_by_parts(p, wq, sb, b, channels_last)
            assert got is not None and got.stride() == want.stride()
            assert torch.equal(got, want)
    one = hostops.depthwise_conv(p, wq, sb[:1], b, False, 127)  # one weight scale
    assert torch.equal(one, _depthwise_by_parts(p, wq, sb[:1].expand(c * mult), b, False))


def test_depthwise_conv_ignores_pixels_no_window_reads() -> None:
    """NaN and Inf in the row and column no window of a stride-2 convolution reads (lanes beyond a row's outputs read
    them): the pass takes the case and equals the general passes."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(2, 3, 10, 10, generator=gen)
    x[:, :, 9, :] = float("nan")
    x[:, :, :, 9] = float("inf")
    wq = torch.randint(-127, 128, (3, 9, 2), generator=gen, dtype=torch.int8)
    sb = torch.rand(6, generator=gen) + 0.01
    for layout in (x, x.contiguous(memory_format=torch.channels_last)):
        p = _patches(layout, (3, 3), (2, 2), groups=3)
        got = hostops.depthwise_conv(p, wq, sb, None, False, 127)
        assert got is not None and torch.equal(got, _depthwise_by_parts(p, wq, sb, None, False))


def test_depthwise_conv_declines_what_the_general_path_handles() -> None:
    """None for non-finite or tiny windows, scales where float32 dequantization could overflow, and operands the
    pass does not take (another dtype, a grouped convolution, mismatched weights, scales or bias)."""
    x = torch.randn(2, 8, 6, 6)
    wq = torch.randint(-127, 128, (8, 9, 1), dtype=torch.int8)
    sb = torch.rand(8) + 0.1
    p = _patches(x, (3, 3), padding=(1, 1), groups=8)
    assert hostops.depthwise_conv(p, wq, sb, None, False, 127) is not None
    for value in (float("nan"), float("inf"), 1e-35):
        bad = x.clone()
        bad[1, 3] = 0.0  # the only non-zero value of its windows
        bad[1, 3, 5, 0] = value
        assert hostops.depthwise_conv(_patches(bad, (3, 3), padding=(1, 1), groups=8), wq, sb, None, False, 127) is None
    huge = _patches(x * 1e31, (3, 3), padding=(1, 1), groups=8)  # (2**31 - 1) * max(sa) beyond FLT_MAX
    assert hostops.depthwise_conv(huge, wq, sb, None, False, 127) is None
    _, sa = hostops.im2col_quantize(huge, True, 127)  # the general path's dequantization declines too
    assert hostops.dequantize(torch.zeros(8, 72, 1, dtype=torch.int32), sa, sb.reshape(8, 1, 1)) is None
    grouped = _patches(torch.randn(2, 16, 6, 6), (3, 3), padding=(1, 1), groups=8)
    for args in ((_patches(x.double(), (3, 3), padding=(1, 1), groups=8), wq, sb, None),
                 (grouped, wq, sb, None), (p, wq[:, :4], sb, None), (p, wq.float(), sb, None), (p, wq, sb[:3], None),
                 (p, wq, sb.double(), None), (p, wq, sb, torch.randn(8).double()), (p, wq, sb, torch.randn(7))):
        assert hostops.depthwise_conv(*args, False, 127) is None


@pytest.mark.parametrize("vnni", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 5, 7, 9), (2, 17, 33, 18), (32, 64, 32, 64), (2, 64, 130, 33),
                                   (2, 3, 1030, 5)])
def test_stack_product_is_the_exact_integer_product(shape: tuple[int, int, int, int], vnni: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The native stack product (AVX-512 VNNI where the CPU has it, else int32 sums) equals int64 bmm for random and
    extreme (-128 / 127) values, row- and column-major operands."""
    if vnni and not hostops._vnni():
        pytest.skip("no AVX-512 VNNI on this CPU")
    monkeypatch.setattr(hostops, "_vnni", lambda: vnni)
    bt, m, k, n = shape
    g = torch.Generator().manual_seed(sum(shape))
    for extreme in (False, True):
        a, b = (torch.randint(0, 2, s, generator=g).mul_(255).sub_(128).to(torch.int8) if extreme
                else torch.randint(-128, 128, s, generator=g, dtype=torch.int8) for s in ((bt, m, k), (bt, k, n)))
        want = torch.bmm(a.long(), b.long())
        strided = torch.cat([a, a], 2)[:, :, :k]  # rows 2k apart
        for aa, bb in ((a, b), (a.mT.contiguous().mT, b.mT.contiguous().mT), (strided, b)):
            got = hostops.stack_product(aa, bb)
            assert got.dtype == torch.int32 and torch.equal(got.long(), want)
    assert hostops.stack_product(a, b.to(torch.int16)) is None
    assert hostops.stack_product(torch.zeros(1, 1, 1 << 17, dtype=torch.int8),
                                 torch.zeros(1, 1 << 17, 1, dtype=torch.int8)) is None


@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 5, 7, 9), (8, 64, 32, 64), (2, 64, 130, 33), (2, 3, 1030, 5)])
def test_stack_gemm_is_quantize_product_dequantize(shape: tuple[int, int, int, int], layout: str) -> None:
    """The one-pass activation GEMM of a stack equals its steps: `quantize` (A per row, B per column), the exact
    integer product and `dequantize`, bit for bit; it declines non-finite lines and CPUs without VNNI."""
    if not hostops._vnni():
        pytest.skip("no AVX-512 VNNI on this CPU")
    bt, m, k, n = shape
    g = torch.Generator().manual_seed(sum(shape))
    a = torch.randn(bt, m, k, generator=g) * torch.rand(bt, m, 1, generator=g) * 100
    b = torch.randn(bt, k, n, generator=g) * torch.rand(bt, 1, n, generator=g)
    a[0, -1] = 0.0  # a zero row: scale 1
    if layout == "columns":
        b = b.mT.contiguous().mT
    qa, sa = hostops.quantize(a, -1, True, 127)
    qb, sb = hostops.quantize(b, -2, True, 127)
    want = hostops.dequantize(torch.bmm(qa.long(), qb.long()).int(), sa, sb)
    assert torch.equal(hostops.stack_gemm(a, b, 127), want)
    a[0, 0, 0] = math.nan
    assert hostops.stack_gemm(a, b, 127) is None
