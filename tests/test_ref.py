"""The golden model, the ref and null targets, and target selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pynqtorch import engine
from pynqtorch.hw.description import Arith
from pynqtorch.targets import registry
from pynqtorch.targets.base import (
    Target,
    TargetUnavailable,
    _int8_blas,
    golden_gemm,
    int8_gemm_exact,
    wrap_signed,
)
from pynqtorch.targets.null import NullTarget
from pynqtorch.targets.ref import RefTarget
from test_engine import FIXED, RUNTIME, f64_bound, row_scales

pytestmark = pytest.mark.usefixtures("fresh_target")


def _exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a.astype(np.int64) @ b.astype(np.int64)


def _saturating(a: np.ndarray, b: np.ndarray, bits: int) -> np.ndarray:
    """Sequential multiply-accumulate with saturation after every step (what the HLS loop does)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    out = np.zeros((a.shape[0], b.shape[1]), np.int64)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            acc = 0
            for k in range(a.shape[1]):
                acc = min(max(acc + int(a[i, k]) * int(b[k, j]), lo), hi)
            out[i, j] = acc
    return out


@pytest.mark.parametrize("k", [1, 1024, 1025, 4096])
def test_golden_int8_extremes_exact_across_blas_chunks(k: int) -> None:
    rng = np.random.default_rng(k)
    a = rng.integers(-128, 128, (9, k), dtype=np.int8)
    b = rng.integers(-128, 128, (k, 7), dtype=np.int8)
    a[0], b[:, 0] = -128, -128
    out = golden_gemm(a, b, Arith(acc_bits=64))
    assert out.dtype == np.int64
    assert np.array_equal(out, _exact(a, b))
    assert out[0, 0] == k * 16384


def test_golden_float_paths_exact_for_int8_values_in_wider_arrays() -> None:
    """int16 arrays (no integer GEMM) take float32 BLAS in K chunks of 1024; still exact at the extremes."""
    rng = np.random.default_rng(2)
    a = rng.choice(np.array([-128, 127], np.int16), (4, 4096))
    b = rng.choice(np.array([-128, 127], np.int16), (4096, 3))
    a[0], b[:, 0] = -128, -128
    assert np.array_equal(golden_gemm(a, b, Arith(acc_bits=64)), _exact(a, b))


def test_integer_blas_self_check_matches_exact_products() -> None:
    """Where the integer GEMM is used it passed its check; it must then agree on fresh extreme cases."""
    if not int8_gemm_exact():
        pytest.skip("torch._int_mm is not exact here; golden_gemm uses float BLAS")
    rng = np.random.default_rng(3)
    a = rng.choice(np.array([-128, 127, -127, 0], np.int8), (33, 2000))
    b = rng.choice(np.array([-128, 127, 1], np.int8), (2000, 45))
    assert np.array_equal(_int8_blas(a, b), _exact(a, b))


def test_golden_wide_operands_use_exact_paths() -> None:
    rng = np.random.default_rng(0)
    a16 = rng.integers(-2**15, 2**15, (5, 3000), dtype=np.int16)   # chunked float64
    b16 = rng.integers(-2**15, 2**15, (3000, 4), dtype=np.int16)
    assert np.array_equal(golden_gemm(a16, b16, Arith(operand_bits=16, acc_bits=64)), _exact(a16, b16))
    a32 = rng.integers(-2**31, 2**31, (3, 50), dtype=np.int64)     # beyond float64: integer matmul, mod 2**64
    b32 = rng.integers(-2**31, 2**31, (50, 2), dtype=np.int64)
    assert np.array_equal(golden_gemm(a32, b32, Arith(operand_bits=16, acc_bits=64)), _exact(a32, b32))


def test_golden_wraps_and_saturates_like_the_hardware() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (6, 40), dtype=np.int8)
    b = rng.integers(-128, 128, (40, 5), dtype=np.int8)
    wrapped = golden_gemm(a, b, Arith(acc_bits=16, overflow="wrap"))
    assert np.array_equal(wrapped, wrap_signed(_exact(a, b), 16))
    assert not np.array_equal(wrapped, _exact(a, b))  # the case really overflows 16 bits
    sat = golden_gemm(a, b, Arith(acc_bits=16, overflow="saturate"))
    assert np.array_equal(sat, _saturating(a, b, 16))
    small = (a // 16).astype(np.int8)  # no overflow possible: both rules give the exact product
    assert np.array_equal(golden_gemm(small, b, Arith(acc_bits=24, overflow="saturate")), _exact(small, b))


def test_ref_call_limits() -> None:
    assert RefTarget(large_calls=False).call_limits(RUNTIME).model_dump() == {"m": 65536, "n": 256, "k": 1024}
    assert RefTarget(large_calls=False).call_limits(FIXED).model_dump() == {"m": 256, "n": 256, "k": 256}
    big = RefTarget().call_limits(FIXED)
    assert (big.m, big.n, big.k) == (4096, 4096, 4096)
    assert all(getattr(big, d) % getattr(FIXED.tile, d) == 0 for d in "mnk")
    with pytest.raises(ValueError, match="units"):
        RefTarget(units=0)


def test_null_units_do_no_arithmetic() -> None:
    engine.use("null", kernel=FIXED, units=3)
    a = torch.ones(512, 256, dtype=torch.int8)
    out = engine.gemm(a, a.t().contiguous(), out_dtype=torch.int32)
    assert torch.equal(out, torch.zeros(512, 512, dtype=torch.int32))
    assert sorted(engine.stats()["tiles_per_unit"]) == ["null0", "null1", "null2"]
    unit = NullTarget().compute_units(FIXED)[0]
    z = unit.run(np.ones((256, 256), np.int8), np.ones((256, 256), np.int8))
    assert z.shape == (256, 256) and not z.any() and not z.flags.writeable


def test_available_targets_and_lazy_imports() -> None:
    avail = registry.available_targets()
    assert avail["ref"] is None and avail["null"] is None
    assert {"csim", "board"} <= set(avail)
    registry.register_target("broken", "pynqtorch.targets.no_such_module:Nope")
    try:
        reason = registry.available_targets()["broken"]
        assert reason is not None and "no_such_module" in reason
        with pytest.raises(TargetUnavailable, match="no_such_module"):
            engine.use("broken", kernel=FIXED)
    finally:
        registry._registered.pop("broken")
    with pytest.raises(ValueError, match="unknown target 'nope'"):
        engine.use("nope", kernel=FIXED)


def test_selection_by_env_default_and_use(monkeypatch: pytest.MonkeyPatch) -> None:
    assert engine.use(kernel=FIXED).name == "ref"  # default
    registry.reset()
    monkeypatch.setenv(registry.ENV_TARGET, "null")
    assert engine.use(kernel=FIXED).name == "null"
    first = registry.active()
    second = engine.use("ref", units=4)  # kernel kept, options passed to the target
    assert first.closed and not second.closed
    assert second.desc.name == "fixed256" and len(second.units) == 4
    assert engine.use(kernel=RUNTIME).units.__len__() == 4  # options kept when only the kernel changes
    with pytest.raises(TypeError, match="target 'ref' does not take options \\['overlay'\\]"):
        engine.use("ref", overlay="gemm_dual")


def test_auto_picks_highest_priority_available() -> None:
    class Fancy(Target):
        name = "fancy"
        priority = 1000

        @classmethod
        def probe(cls) -> str | None:
            return "needs hardware that is not here"

        def compute_units(self, desc):
            raise AssertionError("never built")

    registry.register_target("fancy", Fancy)
    try:
        chosen = engine.use("auto", kernel=FIXED).name
        ok = [n for n, r in registry.available_targets().items() if r is None]
        assert chosen in ok and chosen != "fancy"
        assert registry.target_class(chosen).priority == max(registry.target_class(n).priority for n in ok)
        with pytest.raises(TargetUnavailable, match="needs hardware"):
            engine.use("fancy", kernel=FIXED)
    finally:
        registry._registered.pop("fancy")


def test_bundled_default_kernel_runs_on_ref() -> None:
    active = registry.active()
    assert active.name == "ref"
    g = torch.Generator().manual_seed(20)
    x, w = torch.randn(8, 40, generator=g), torch.randn(40, 12, generator=g)
    sa, sb = row_scales(x, w)
    assert ((engine.gemm(x, w).double() - x.double() @ w.double()).abs() <= f64_bound(x, w, sa, sb)).all()
