"""Quantization schemes as registered `Scheme` objects: the built-in schemes give exactly what the engine
computed before they were objects (a reference formulation written here), per-group weights on ref and
csim, and registering a scheme of one's own (the example of docs/engine.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from pydantic import ValidationError

from pynqtorch import engine
from pynqtorch.engine import PerGroup, QuantConfig, Quantized, Scheme, quant
from pynqtorch.engine.quant import get_scheme, register_scheme, schemes
from pynqtorch.examples.common import compared_schemes

OLD = {  # the configurations that existed before schemes were objects: (A per row?, weight per channel?)
    "per_tensor": QuantConfig.per_tensor(),
    "per_channel": QuantConfig(weights="per_channel", activations="per_tensor"),
    "per_row": QuantConfig(weights="per_tensor", activations="per_row"),
    "default": QuantConfig(),
}


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch: pytest.MonkeyPatch, fresh_target: None) -> None:
    """Schemes registered by a test stay in that test."""
    monkeypatch.setattr(quant, "_schemes", dict(quant._schemes))


# ------------------------------------------------------------ reference formulation (the documented rules)


def ref_quantize(x: torch.Tensor, dim: int, per_line: bool, qmax: int = 127) -> Quantized:
    """``q = round(x * (1 / s))``, ``s = amax / qmax`` (1 where amax is 0), float32 unless float64 input or a
    non-zero amax below 2**-100; lines with NaN/Inf are bad and quantized as zeros."""
    cd = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(cd)
    bad = ~torch.isfinite(x).all(dim, keepdim=True) if x.shape[dim] else None
    x = x.nan_to_num(0.0, 0.0, 0.0)
    amax = x.abs().amax(dim, keepdim=True) if x.shape[dim] else x.new_zeros(1)
    if not per_line:
        amax = amax.max()
    pos = amax[amax > 0]
    if cd == torch.float32 and pos.numel() and float(pos.min()) < 2.0 ** -100:
        x, amax = x.double(), amax.double()
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    q = (x * scale.reciprocal()).round().to(torch.int8)
    return Quantized(q, scale, bad if bad is not None and bool(bad.any()) else None, qmax)


def ref_gemm(a: torch.Tensor, b: torch.Tensor, row_a: bool, line_b: bool) -> torch.Tensor:
    """The engine's float GEMM as it was: quantize, exact integer product, ``acc * s_a * s_b``, NaN/Inf
    rows and columns recomputed with torch."""
    qa, qb = ref_quantize(a[None], -1, row_a), ref_quantize(b[None], -2, line_b)
    acc = qa.q.long() @ qb.q.long()
    c = (acc.to(torch.promote_types(qa.scale.dtype, qb.scale.dtype)) * qa.scale * qb.scale)[0]
    if qa.scale.dtype == qb.scale.dtype == torch.float32 and (2**31 - 1) * float(qa.scale.max()) * max(
            1.0, float(qb.scale.max())) >= torch.finfo(torch.float32).max:  # acc * s_a could overflow: float64
        c = (acc.double() * qa.scale.double() * qb.scale.double()).float()[0]
    if qa.bad is not None:
        rows = qa.bad[0, :, 0]
        c[rows] = (a[rows] @ b).to(c.dtype)
    if qb.bad is not None:
        cols = qb.bad[0, 0]
        c[:, cols] = (a @ b[:, cols]).to(c.dtype)
    return c.to(a.dtype)


def _inputs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(21)
    a, b = torch.randn(37, 300, generator=g), torch.randn(300, 45, generator=g)
    skew_a = a * torch.logspace(-6, 6, 37).unsqueeze(1)
    skew_b = b * torch.logspace(6, -6, 45).unsqueeze(0)
    half = (torch.randint(-254, 255, (37, 300), generator=g) / 2).float()  # exact halves: ties to even
    huge, tiny = a * 1e37, a * 1e-41  # near float32 max; subnormal (quantized in float64)
    zeros = a.clone()
    zeros[3] = 0
    zb = b.clone()
    zb[:, 7] = 0
    nonfinite_a, nonfinite_b = a.clone(), b.clone()
    nonfinite_a[5, 9], nonfinite_b[11, 2], nonfinite_b[0, 40] = math.nan, math.inf, -math.inf
    return {"random": (a, b), "skewed": (skew_a, skew_b), "halves": (half, b), "huge": (huge, b * 1e-30),
            "tiny": (tiny, b), "zero_lines": (zeros, zb), "nonfinite": (nonfinite_a, nonfinite_b),
            "float64": (a.double() * 1e-200, b.double()), "float16": (a.half(), b.half()),
            "bfloat16": (a.bfloat16(), b.bfloat16()), "transposed_b": (a, b.t().contiguous().t())}


@pytest.mark.parametrize("case", list(_inputs()))
@pytest.mark.parametrize("name", list(OLD))
@pytest.mark.parametrize("weight", [False, True], ids=["dynamic_b", "weight_b"])
def test_builtin_schemes_are_bit_identical_to_the_old_arithmetic(case: str, name: str, weight: bool) -> None:
    a, b = _inputs()[case]
    cfg = OLD[name]
    row_a = cfg.activations == "per_row"
    line_b = cfg.weights == "per_channel" if weight else row_a
    got = engine.gemm(a, b, weight=weight, config=cfg)
    torch.testing.assert_close(got, ref_gemm(a, b, row_a, line_b), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", ["per_tensor", "per_channel", "per_row"])
@pytest.mark.parametrize("dim", [-1, -2])
def test_line_schemes_fast_path_and_torch_equal_the_reference(name: str, dim: int) -> None:
    scheme = get_scheme(name)
    per_line = name != "per_tensor"
    for case, (a, _) in _inputs().items():
        x = a[None]
        want = ref_quantize(x, dim, per_line)
        xc = x if x.dtype == torch.float64 else x.float()
        for got in (scheme.quantize(x, dim, 127), scheme.quantize_torch(xc, dim, 127)):
            assert torch.equal(got.q, want.q), case
            assert got.scale.dtype == want.scale.dtype and torch.equal(got.scale, want.scale), case
            assert tuple(got.scale.shape) == scheme.scale_shape(tuple(x.shape), dim), case
            assert (got.bad is None) == (want.bad is None), case
            assert got.bad is None or torch.equal(got.bad, want.bad), case


def test_config_names_registered_schemes_for_their_role() -> None:
    assert set(schemes("weights")) >= {"per_tensor", "per_channel", "per_group_32", "per_group_64",
                                       "per_group_128"}
    assert set(schemes("activations")) == {"per_tensor", "per_row"}
    assert QuantConfig(weights="per_group_64").weight_scheme == PerGroup("per_group_64", size=64)
    with pytest.raises(ValidationError, match="no quantization scheme 'per_group_7'.*per_group_32"):
        QuantConfig(weights="per_group_7")
    with pytest.raises(ValidationError, match="'per_group_32' quantizes weights, not activations"):
        QuantConfig(activations="per_group_32")
    with pytest.raises(ValueError, match="registered already"):
        register_scheme(PerGroup("per_group_32", size=16))
    with pytest.raises(ValueError, match="only weight schemes may group K"):
        register_scheme(PerGroup("grouped_acts", ("weights", "activations"), size=32))
    with pytest.raises(ValueError, match="group size must be positive"):
        PerGroup("bad", size=0)


# ------------------------------------------------------------------------------------------- per group


def ref_group_gemm(a: torch.Tensor, b: torch.Tensor, size: int) -> torch.Tensor:
    """Per-row A, per-(group, column) B: ``s_a * sum_g (acc_g * s_b,g)`` summed in group order."""
    k = a.shape[1]
    qa = ref_quantize(a[None], -1, True)
    c = None
    for start in range(0, k, size):
        qb = ref_quantize(b[None, start:start + size], -2, True)
        acc = (qa.q[0, :, start:start + size].long() @ qb.q[0].long()).float() * qb.scale[0]
        c = acc if c is None else c + acc
    return c * qa.scale[0]


def _outliers(k: int = 520, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights with a few large entries along K in every column (where one scale per column loses most)."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(33, k, generator=g), torch.randn(k, 50, generator=g) * 0.05
    rows = torch.randint(0, k, (50,), generator=g)
    b[rows, torch.arange(50)] = 4.0
    return a, b


@pytest.mark.parametrize("size", [32, 64, 128])
def test_per_group_equals_its_definition_on_ref(size: int) -> None:
    engine.use("ref", kernel="gemm_i8_packed", large_calls=False)  # calls limited like the hardware
    a, b = _outliers()
    cfg = QuantConfig(weights=f"per_group_{size}")
    want = ref_group_gemm(a, b, size)
    for _ in range(2):  # quantized, then from the weight cache
        assert torch.equal(engine.gemm(a, b, weight=True, config=cfg), want)
    qb = cfg.weight_scheme.quantize(b[None], -2, 127)
    groups = -(-b.shape[0] // size)
    assert qb.q.shape == (groups, size, b.shape[1])
    assert tuple(qb.scale.shape) == cfg.weight_scheme.scale_shape((1, *b.shape), -2) == (1, groups, 1, b.shape[1])


@pytest.mark.parametrize("activations", ["per_tensor", "per_row"])
def test_per_group_batched_operands(activations: str) -> None:
    """bmm with a batch of weights, and a batch of activations against one weight, under either A scheme."""
    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(3, 9, 200, generator=g), torch.randn(3, 200, 20, generator=g)
    cfg = QuantConfig(weights="per_group_64", activations=activations)
    got = engine.gemm(a, b, weight=True, config=cfg)
    if activations == "per_row":  # every scale is per batch entry: each equals its own GEMM
        for i in range(3):
            assert torch.equal(got[i], ref_group_gemm(a[i], b[i], 64))
    exact = a.double() @ b.double()
    per_channel = engine.gemm(a, b, weight=True, config=QuantConfig(activations=activations))
    assert float((got.double() - exact).norm()) < float((per_channel.double() - exact).norm())
    one = engine.gemm(a, b[0], weight=True, config=cfg)  # [3, 9, 200] @ [200, 20]
    assert torch.equal(one.reshape(27, 20), engine.gemm(a.reshape(27, 200), b[0], weight=True, config=cfg))


def test_per_group_on_every_target_equals_its_definition(target) -> None:
    """ref, csim and the virtual board give the definition bit for bit (so csim == ref == board)."""
    a, b = _outliers(k=300)
    x = torch.randn(2, 4, 300, generator=torch.Generator().manual_seed(4))  # activations [..., M, K]
    target.use()
    engine.reset_stats()
    for size in (32, 64, 128):
        assert torch.equal(engine.gemm(a, b, weight=True, config=QuantConfig(weights=f"per_group_{size}")),
                           ref_group_gemm(a, b, size))
    got = engine.gemm(x, b, weight=True, config=QuantConfig(weights="per_group_64"))
    assert torch.equal(got.reshape(8, -1), ref_group_gemm(x.reshape(8, 300), b, 64))
    assert all(u.startswith(target.name) for u in engine.stats()["tiles_per_unit"])


def test_per_group_beats_per_channel_on_outliers_along_k() -> None:
    a, b = _outliers()
    exact = a.double() @ b.double()

    def err(name: str) -> float:
        out = engine.gemm(a, b, weight=True, config=QuantConfig(weights=name))
        return float((out.double() - exact).norm() / exact.norm())

    e = {n: err(n) for n in ("per_channel", "per_group_32", "per_group_64", "per_group_128")}
    assert e["per_group_32"] < e["per_group_64"] < e["per_group_128"] < e["per_channel"]
    assert 2 * e["per_group_32"] < e["per_channel"]


def test_per_group_nonfinite_columns_recomputed() -> None:
    a, b = _outliers()
    b[100, 3] = math.nan
    b[7, 9] = math.inf
    out = engine.gemm(a, b, weight=True, config=QuantConfig(weights="per_group_32"))
    torch.testing.assert_close(out[:, [3, 9]], (a @ b)[:, [3, 9]], rtol=0, atol=0, equal_nan=True)
    finite = [j for j in range(b.shape[1]) if j not in (3, 9)]
    assert torch.isfinite(out[:, finite]).all()


def test_per_group_refuses_kernels_whose_k_tile_splits_a_group() -> None:
    engine.use("ref", kernel="gemm_i8_dsp")  # K tile 256
    a, b = _outliers()
    with pytest.raises(ValueError, match=r"'per_group_128' groups K by 128, which is not a multiple of kernel "
                                         r"'gemm_i8_dsp''s K tile \(256\)"):
        engine.gemm(a, b, weight=True, config=QuantConfig(weights="per_group_128"))
    with pytest.raises(ValueError, match="not a multiple"):
        engine.prepare_weight(b, QuantConfig(weights="per_group_32"))
    big = PerGroup("per_group_256", size=256)  # a registered group that the tile divides runs
    register_scheme(big)
    out = engine.gemm(a, b, weight=True, config=QuantConfig(weights="per_group_256"))
    assert torch.equal(out, ref_group_gemm(a, b, 256))


# ------------------------------------------------------------------------- your own scheme (docs/engine.md)


@dataclass(frozen=True)
class PowerOfTwoPerChannel(Scheme):
    """One scale per line, rounded up to a power of two (dequantization becomes a shift)."""

    def scale_shape(self, shape: tuple[int, int, int], dim: int) -> tuple[int, ...]:
        return (shape[0], shape[1], 1) if dim == -1 else (shape[0], 1, shape[2])

    def quantize_torch(self, xc: torch.Tensor, dim: int, qmax: int) -> Quantized:
        amax = xc.abs().amax(dim, keepdim=True)
        scale = torch.where(amax > 0, torch.exp2(torch.ceil(torch.log2(amax / qmax))), 1.0)
        q = torch.round(xc / scale).clamp_(-qmax, qmax).to(torch.int8)
        return Quantized(q, scale, None, qmax)


def test_own_scheme_registers_and_runs() -> None:
    register_scheme(PowerOfTwoPerChannel("pow2_per_channel", roles=("weights",)))
    a, b = _outliers()
    out = engine.gemm(a, b, weight=True, config=QuantConfig(weights="pow2_per_channel"))
    scale = get_scheme("pow2_per_channel").quantize(b[None], -2, 127).scale
    assert torch.equal(torch.log2(scale), torch.log2(scale).round())  # powers of two
    qa = ref_quantize(a[None], -1, True)
    qb = torch.round(b / scale[0]).clamp(-127, 127)
    assert torch.equal(out, (qa.q[0].double() @ qb.double()).float() * qa.scale[0] * scale[0])
    with pytest.raises(ValidationError, match="quantizes weights, not activations"):
        QuantConfig(activations="pow2_per_channel")
    assert compared_schemes()["pow2_per_channel"] == QuantConfig(weights="pow2_per_channel")


@dataclass(frozen=True)
class WrongShape(PowerOfTwoPerChannel):
    def scale_shape(self, shape: tuple[int, int, int], dim: int) -> tuple[int, ...]:
        return ()  # declares one scale, gives one per column


def test_own_scheme_with_undeclared_scale_shape_is_refused() -> None:
    register_scheme(WrongShape("wrong", roles=("weights",)))
    a, b = _outliers()
    with pytest.raises(ValueError, match=r"scheme 'wrong' gave torch.int8 values \[1, 520, 50\] and scales "
                                         r"\[1, 1, 50\] .* declared: int8 values \[1, 520, 50\], scales \[\]"):
        engine.gemm(a, b, weight=True, config=QuantConfig(weights="wrong"))
