"""Quantization schemes, the config API and the weight cache."""

from __future__ import annotations

import gc
import threading

import pytest
import torch
from pydantic import ValidationError

from pynqtorch import engine
from pynqtorch.engine import QuantConfig
from test_engine import FIXED, f64_bound, make_desc

SCHEMES = {
    "per_tensor": QuantConfig.per_tensor(),
    "per_channel": QuantConfig(weights="per_channel", activations="per_tensor"),
    "per_row": QuantConfig(weights="per_tensor", activations="per_row"),
    "default": QuantConfig(),
}


pytestmark = pytest.mark.usefixtures("fresh_target")


def _scales(a: torch.Tensor, b: torch.Tensor, cfg: QuantConfig, weight: bool, qmax: int = 127):
    per_b = cfg.weights == "per_channel" if weight else cfg.activations == "per_row"
    sa = a.double().abs().amax(-1, keepdim=True) if cfg.activations == "per_row" else a.double().abs().max()
    sb = b.double().abs().amax(-2, keepdim=True) if per_b else b.double().abs().max()
    return sa / qmax, sb / qmax


def _skewed(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of very different magnitudes (where per-row/per-channel scales pay off)."""
    a = torch.randn(64, 256, generator=g) * torch.logspace(-3, 0, 64).unsqueeze(1)
    b = torch.randn(256, 48, generator=g) * torch.logspace(0, -3, 48).unsqueeze(0)
    return a, b


def test_config_defaults_and_validation() -> None:
    assert engine.get_quant_config() == QuantConfig(weights="per_channel", activations="per_row")
    assert QuantConfig.per_tensor() == QuantConfig(weights="per_tensor", activations="per_tensor")
    with pytest.raises(ValidationError):
        QuantConfig(weights="per_row")
    with pytest.raises(ValidationError):
        engine.set_quant_config(activations="per_channel")
    assert engine.get_quant_config() == QuantConfig()


def test_context_manager_nests_and_is_per_thread() -> None:
    seen: list[QuantConfig] = []
    with engine.quant_config(weights="per_tensor") as outer:
        assert engine.get_quant_config() == outer == QuantConfig(weights="per_tensor")
        with engine.quant_config(QuantConfig.per_tensor()):
            assert engine.get_quant_config() == QuantConfig.per_tensor()
            t = threading.Thread(target=lambda: seen.append(engine.get_quant_config()))
            t.start()
            t.join()
        assert engine.get_quant_config() == outer
    assert seen == [QuantConfig()]  # another thread sees the global config
    engine.set_quant_config(activations="per_tensor")
    assert engine.get_quant_config() == QuantConfig(activations="per_tensor")
    assert engine.resolve_config(QuantConfig.per_tensor()) == QuantConfig.per_tensor()


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("weight", [False, True])
def test_error_within_scheme_bound(name: str, weight: bool) -> None:
    cfg = SCHEMES[name]
    g = torch.Generator().manual_seed(10)
    a, b = _skewed(g)
    out = engine.gemm(a, b, weight=weight, config=cfg)
    sa, sb = _scales(a, b, cfg, weight)
    exact = a.double() @ b.double()
    assert ((out.double() - exact).abs() <= f64_bound(a, b, sa, sb)).all()


def test_fine_grained_scales_beat_per_tensor() -> None:
    g = torch.Generator().manual_seed(11)
    a, b = _skewed(g)
    exact = a.double() @ b.double()
    err = {n: float((engine.gemm(a, b, weight=True, config=c).double() - exact).norm() / exact.norm())
           for n, c in SCHEMES.items()}
    assert err["default"] < err["per_row"] < err["per_tensor"]
    assert err["default"] < err["per_channel"] < err["per_tensor"]
    assert 3 * err["default"] < err["per_tensor"]


def test_zero_and_tiny_lines() -> None:
    a = torch.randn(5, 40)
    a[1] = 0.0
    a[3] = torch.randn(40) * 1e-41  # float32 subnormals: quantized in float64
    b = torch.randn(40, 6)
    b[:, 2] = 0.0
    out = engine.gemm(a, b)
    assert torch.isfinite(out).all()
    assert (out[1] == 0).all() and (out[:, 2] == 0).all()
    sa = a.double().abs().amax(-1, keepdim=True) / 127
    sb = b.double().abs().amax(-2, keepdim=True) / 127
    subnormal_step = 2.0 ** -149  # the float32 result itself is subnormal in row 3
    err = (out.double() - a.double() @ b.double()).abs()
    assert (err <= f64_bound(a, b, sa, sb) + subnormal_step).all()
    assert torch.equal(engine.gemm(torch.zeros(3, 4), torch.zeros(4, 2), config=QuantConfig.per_tensor()),
                       torch.zeros(3, 2))


@pytest.mark.parametrize("weights", ["per_channel", "per_group_32"])
@pytest.mark.parametrize("a_mag,b_mag", [(1e36, 1e-30), (3e37, 1e-20), (1e35, 1.0), (1e38, 1e-3), (1e-30, 1e36)])
def test_huge_operands_with_finite_results_stay_finite(a_mag: float, b_mag: float, weights: str) -> None:
    """(acc * sa) (or a group's acc * sb) would overflow float32 where the result is finite: dequantized in float64
    instead."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(4, 64, generator=g) * a_mag, torch.rand(64, 3, generator=g) * b_mag
    want = a.double() @ b.double()
    out = engine.gemm(a, b, weight=True, config=QuantConfig(weights=weights))
    assert torch.isfinite(out).all()
    assert ((out.double() - want).norm() / want.norm()) < 0.02
    big = torch.full((2, 8), 1e38) @ torch.full((8, 2), 1e3)  # a true overflow stays inf, as on CPU
    assert torch.isinf(engine.gemm(torch.full((2, 8), 1e38), torch.full((8, 2), 1e3))).all() and big.isinf().all()


def test_normal_range_dequantization_is_unchanged() -> None:
    """Below the overflow bound the result is (acc * sa) * sb in float32, bit for bit."""
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(8, 32, generator=g) * 1e30, torch.randn(32, 5, generator=g)
    qa = engine.quant.quantize_torch(a[None], -1, True, 127)
    qb = engine.quant.quantize_torch(b[None], -2, True, 127)
    acc = torch.bmm(qa.q.long(), qb.q.long())
    assert torch.equal(engine.gemm(a, b), (acc.float() * qa.scale * qb.scale)[0])


def test_low_precision_kernel_uses_its_operand_range() -> None:
    """A 4-bit kernel quantizes to [-7, 7]; the error bound scales with amax / 7."""
    engine.use("ref", kernel=make_desc("int4", {"m": 8, "n": 8, "k": 8}, operand_bits=4, acc_bits=16))
    g = torch.Generator().manual_seed(12)
    a, b = torch.randn(20, 64, generator=g), torch.randn(64, 10, generator=g)
    out = engine.gemm(a, b)
    sa, sb = _scales(a, b, QuantConfig(), False, qmax=7)
    assert ((out.double() - a.double() @ b.double()).abs() <= f64_bound(a, b, sa, sb)).all()
    ai = torch.randint(-128, 128, (20, 64), dtype=torch.int8, generator=g)
    bi = torch.randint(-128, 128, (64, 10), dtype=torch.int8, generator=g)
    assert torch.equal(engine.gemm(ai, bi, out_dtype=torch.int32), ai.int() @ bi.int())


# ---------------------------------------------------------------- weight cache


def _counters() -> dict[str, int]:
    return engine.stats()["counters"]


def test_weight_quantized_once_and_reused() -> None:
    w = torch.randn(96, 200)  # nn.Linear layout [out, in]; B = w.t()
    x = torch.randn(30, 200)
    first = engine.gemm(x, w.t(), weight=True)
    for _ in range(4):
        assert torch.equal(engine.gemm(x, w.t(), weight=True), first)
    assert _counters()["weight_quantizations"] == 1
    assert _counters()["weight_cache_hits"] == 4
    # A dynamic B is quantized per column under per_row activations: the same scales as per-channel weights.
    assert torch.equal(first, engine.gemm(x, w.t()))


def test_cache_invalidated_by_in_place_write() -> None:
    w = torch.randn(64, 100)
    x = torch.randn(10, 100)
    before = engine.gemm(x, w.t(), weight=True)
    with torch.no_grad():
        w.mul_(2.0)
    after = engine.gemm(x, w.t(), weight=True)
    assert _counters()["weight_quantizations"] == 2
    assert torch.allclose(after, 2 * before, rtol=1e-5, atol=1e-5)
    p = torch.nn.Parameter(torch.randn(64, 100))
    engine.gemm(x, p.detach().t(), weight=True)
    with torch.no_grad():
        p[3, 4] = 100.0  # a write through the parameter bumps the version shared by its detached views
    out = engine.gemm(x, p.detach().t(), weight=True)
    assert _counters()["weight_quantizations"] == 4
    assert torch.allclose(out, engine.gemm(x, p.detach().t().clone()), rtol=0, atol=0)


def test_cache_keys_geometry_config_and_owner() -> None:
    w = torch.randn(64, 100)
    x = torch.randn(10, 100)
    engine.gemm(x, w.t(), weight=True)
    engine.gemm(x[:, :50], w[:, :50].t(), weight=True)                  # another view of the same storage
    engine.gemm(x, w.t(), weight=True, config=QuantConfig.per_tensor())  # another weight scheme
    engine.gemm(x, w.t(), weight=True, config=QuantConfig(activations="per_tensor"))  # same weight scheme
    assert _counters()["weight_quantizations"] == 3
    owner = torch.empty(0)  # e.g. the device tensor whose storage holds the data
    engine.gemm(x, w.t(), weight=True, owner=owner, version=("gen", 1))
    engine.gemm(x, w.t(), weight=True, owner=owner, version=("gen", 1))
    engine.gemm(x, w.t(), weight=True, owner=owner, version=("gen", 2))
    assert _counters()["weight_quantizations"] == 5
    engine.invalidate_weights(w)
    engine.gemm(x, w.t(), weight=True)
    assert _counters()["weight_quantizations"] == 6


def test_prepared_handle_and_entries_die_with_the_tensor() -> None:
    engine.use("ref", kernel=FIXED)
    w = torch.randn(300, 40)
    x = torch.randn(7, 300)
    gc.collect()
    handle = engine.prepare_weight(w)
    n0 = engine.stats()["weight_cache_entries"]
    assert torch.equal(engine.gemm(x, w, weight=handle), engine.gemm(x, w))
    assert _counters()["weight_quantizations"] == 1
    w.add_(1.0)  # stale handle: re-quantized, never used stale
    assert torch.equal(engine.gemm(x, w, weight=handle), engine.gemm(x, w))
    assert _counters()["weight_quantizations"] == 2
    other = torch.randn(300, 40)  # same geometry and version, other memory: the handle is not used
    assert torch.equal(engine.gemm(x, other, weight=handle), engine.gemm(x, other))
    assert _counters()["weight_quantizations"] == 3
    del w, handle, other
    gc.collect()
    assert engine.stats()["weight_cache_entries"] == n0 - 1


def test_integer_weights_cached_as_limbs() -> None:
    w = torch.randint(-30000, 30000, (50, 80), dtype=torch.int16)
    x = torch.randint(-30000, 30000, (6, 80), dtype=torch.int16)
    want = x.long() @ w.long().t()
    for _ in range(3):
        assert torch.equal(engine.gemm(x, w.t(), weight=True, out_dtype=torch.int64), want)
    assert _counters()["weight_quantizations"] == 1
    w[0, 0] = 7
    assert torch.equal(engine.gemm(x, w.t(), weight=True, out_dtype=torch.int64), x.long() @ w.long().t())


def test_inference_tensors_work_uncached() -> None:
    with torch.inference_mode():
        w = torch.randn(20, 30)
        x = torch.randn(4, 30)
        out = engine.gemm(x, w.t(), weight=True)
        engine.gemm(x, w.t(), weight=True)
    assert torch.equal(out, engine.gemm(x.clone(), w.clone().t()))
    assert _counters()["weight_uncached"] == 2
