"""Engine GEMM on the ref/null targets: exact integers, quantized floats, edge cases, tiling and scheduling."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from pynqtorch import engine
from pynqtorch.hw.description import Description
from pynqtorch.targets import registry


def make_desc(name: str, tile: dict[str, int], runtime: dict[str, int] | None = None, *, acc_bits: int = 32,
              operand_bits: int = 8, overflow: str = "wrap") -> Description:
    """A kernel description built in the test: fixed (runtime=None) or with runtime m/n/k up to `runtime`."""
    args: list[dict[str, Any]] = [
        {"name": "in1", "role": "a", "interface": "m_axi", "ctype": "int*", "offset": "0x10", "layout": "mk"},
        {"name": "in2", "role": "b", "interface": "m_axi", "ctype": "int*" if runtime is None else "ap_uint<64>*",
         "offset": "0x1c", "layout": "kn" if runtime is None else "nk", "pack": 1 if runtime is None else 8},
        {"name": "out", "role": "c", "interface": "m_axi", "ctype": "int*", "offset": "0x28", "layout": "mn"},
    ]
    extra: dict[str, Any] = {}
    if runtime is not None:
        args += [{"name": d, "role": d, "interface": "s_axilite", "ctype": "int", "offset": hex(0x34 + 8 * i)}
                 for i, d in enumerate("mnk")]
        extra = {"runtime_dims": ["m", "n", "k"], "max": runtime}
    return Description.model_validate({
        "name": name, "top": name, "op": "gemm", "sources": [f"{name}.cpp"],
        "dtypes": {"a": "int8", "b": "int8", "acc": f"int{acc_bits}", "c": f"int{acc_bits}"},
        "arith": {"operand_bits": operand_bits, "acc_bits": acc_bits, "overflow": overflow},
        "tile": tile, "args": args, "perf": {"cycles": "k*n + m*(k + n)"}, **extra})


FIXED = make_desc("fixed256", {"m": 256, "n": 256, "k": 256})
RUNTIME = make_desc("runtime64", {"m": 1, "n": 64, "k": 64}, {"m": 65536, "n": 256, "k": 1024})


pytestmark = pytest.mark.usefixtures("fresh_target")


def strict(desc: Description = FIXED, units: int = 2) -> None:
    """The ref target with calls limited to what the hardware takes (tiling visible in the stats)."""
    engine.use("ref", kernel=desc, units=units, large_calls=False)


def f64_bound(a: torch.Tensor, b: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor) -> torch.Tensor:
    """Elementwise bound on |quantized - exact| (docs/engine.md): sa/2 Σ|b| + sb/2 Σ|a| + K sa sb/4."""
    a, b = a.double(), b.double()
    k = a.shape[-1]
    return (sa / 2 * b.abs().sum(-2, keepdim=True) + sb / 2 * a.abs().sum(-1, keepdim=True)
            + k * sa * sb / 4) * 1.001 + 1e-6 * (a.abs() @ b.abs())


def row_scales(a: torch.Tensor, b: torch.Tensor, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
    return (a.double().abs().amax(-1, keepdim=True) / qmax, b.double().abs().amax(-2, keepdim=True) / qmax)


# ---------------------------------------------------------------- integers


@pytest.mark.parametrize("desc", [FIXED, RUNTIME], ids=["fixed", "runtime"])
def test_int8_extremes_exact_over_several_k_calls(desc: Description) -> None:
    strict(desc)
    a = torch.full((37, 4096), -128, dtype=torch.int8)
    b = torch.full((4096, 29), -128, dtype=torch.int8)
    out = engine.gemm(a, b, out_dtype=torch.int32)
    assert out.dtype == torch.int32
    assert torch.equal(out, torch.full((37, 29), 4096 * 128 * 128, dtype=torch.int32))
    k_calls = 4096 // desc.dim_limit("k")
    assert engine.stats()["counters"]["kernel_calls"] >= k_calls >= 4


def test_int8_random_exact_and_result_dtype() -> None:
    strict()
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (300, 700), dtype=torch.int8, generator=g)
    b = torch.randint(-128, 128, (700, 90), dtype=torch.int8, generator=g)
    assert torch.equal(engine.gemm(a, b, out_dtype=torch.int64), a.long() @ b.long())
    with pytest.raises(OverflowError, match="outside torch.int8"):
        engine.gemm(a, b)  # torch's result dtype is int8: the exact values do not fit
    small = torch.tensor([[1, 2], [3, 4]], dtype=torch.int8)
    assert torch.equal(engine.gemm(small, small), small @ small)


@pytest.mark.parametrize("dtype,lo,hi", [(torch.uint8, 0, 255), (torch.int16, -2**15, 2**15 - 1),
                                         (torch.int32, -2**27, 2**27), (torch.int64, -2**27, 2**27)])
def test_wide_integers_exact_through_limbs(dtype: torch.dtype, lo: int, hi: int) -> None:
    strict(RUNTIME)
    g = torch.Generator().manual_seed(1)
    a = torch.randint(lo, hi, (45, 130), generator=g).to(dtype)
    b = torch.randint(lo, hi, (130, 70), generator=g).to(dtype)
    a[0, :] = lo
    b[:, 0] = lo
    exact = a.long() @ b.long()
    out = engine.gemm(a, b, out_dtype=torch.int64)
    assert torch.equal(out, exact)
    assert engine.stats()["counters"]["limb_products"] > 1


def test_int64_limits_exact_and_overflow_raises() -> None:
    strict()
    one = torch.ones(2, 1, dtype=torch.int64)
    for row, want in (([2**62, 2**62 - 1], 2**63 - 1), ([-2**62, -2**62], -2**63), ([-2**63, 2**63 - 1], -1)):
        assert engine.gemm(torch.tensor([row]), one).item() == want
    with pytest.raises(OverflowError, match="does not fit in int64"):
        engine.gemm(torch.tensor([[2**62, 2**62]]), one)
    with pytest.raises(OverflowError, match="does not fit in int64"):
        engine.gemm(torch.tensor([[-2**63, -1]]), one)
    # int32 inputs near the limit: exact in int64, error in torch's int32 result dtype.
    a = torch.full((3, 2), 2**31 - 1, dtype=torch.int32)  # 2 (2**31 - 1)**2 = 2**63 - 2**33 + 2
    assert torch.equal(engine.gemm(a, a.t().contiguous(), out_dtype=torch.int64),
                       torch.full((3, 3), 2 * (2**31 - 1) ** 2, dtype=torch.int64))
    with pytest.raises(OverflowError, match="does not fit in int64"):
        engine.gemm(torch.full((1, 3), -2**31, dtype=torch.int32), torch.full((3, 1), -2**31, dtype=torch.int32))
    with pytest.raises(OverflowError, match="never truncates"):
        engine.gemm(a, a.t())


def test_narrow_accumulator_kernel_still_exact() -> None:
    """A 16-bit accumulator forces narrower digits (more limbs) and short K calls; results stay exact."""
    narrow = make_desc("narrow", {"m": 4, "n": 4, "k": 8}, acc_bits=16)
    engine.use("ref", kernel=narrow, large_calls=False)
    g = torch.Generator().manual_seed(2)
    a = torch.randint(-128, 128, (9, 50), dtype=torch.int8, generator=g)
    b = torch.randint(-128, 128, (50, 7), dtype=torch.int8, generator=g)
    assert torch.equal(engine.gemm(a, b, out_dtype=torch.int32), (a.int() @ b.int()))
    assert engine.stats()["counters"]["limb_products"] == 4  # int8 split into two 6-bit-digit limbs


# ---------------------------------------------------------------- floats


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_float_dtypes_within_bound(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.randn(70, 300, generator=g).to(dtype)
    b = torch.randn(300, 50, generator=g).to(dtype)
    out = engine.gemm(a, b)
    assert out.dtype == dtype and out.shape == (70, 50)
    exact = a.double() @ b.double()
    sa, sb = row_scales(a, b)
    out_err = 2.0 ** -8 if dtype in (torch.float16, torch.bfloat16) else 0.0  # rounding of the result
    assert ((out.double() - exact).abs() <= f64_bound(a, b, sa, sb) + out_err * exact.abs()).all()


def test_nonfinite_positions_match_torch() -> None:
    strict()
    g = torch.Generator().manual_seed(4)
    a = torch.randn(300, 280, generator=g)
    b = torch.randn(280, 270, generator=g)
    a[3, 7] = float("nan")
    a[260, 0] = float("inf")
    a[261, 5] = -float("inf")
    b[9, 100] = float("inf")
    b[:, 200] = 0.0
    b[2, 201] = float("-inf")
    a[261, 2] = 0.0  # Inf * 0 -> NaN in torch
    for dtype in (torch.float32, torch.float16, torch.float64):
        ad, bd = a.to(dtype), b.to(dtype)
        want = ad @ bd
        got = engine.gemm(ad, bd)
        assert torch.equal(torch.isnan(got), torch.isnan(want))
        assert torch.equal(torch.isposinf(got), torch.isposinf(want))
        assert torch.equal(torch.isneginf(got), torch.isneginf(want))
    assert engine.stats()["counters"]["nonfinite_patches"] == 3


@pytest.mark.parametrize("m,k,n", [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int16])
def test_empty_dims(m: int, k: int, n: int, dtype: torch.dtype) -> None:
    a, b = torch.ones(m, k, dtype=dtype), torch.ones(k, n, dtype=dtype)
    out = engine.gemm(a, b)
    assert out.shape == (m, n) and out.dtype == dtype
    assert torch.equal(out, torch.zeros(m, n, dtype=dtype))
    assert engine.gemm(torch.ones(2, m, k, dtype=dtype), torch.ones(2, k, n, dtype=dtype)).shape == (2, m, n)


def test_layouts_give_identical_results() -> None:
    """Transposed, sliced, expanded and batched-leading inputs equal the contiguous computation bit for bit."""
    strict(RUNTIME)
    g = torch.Generator().manual_seed(5)
    base_a = torch.randn(100, 400, generator=g)
    base_b = torch.randn(130, 300, generator=g)
    a = base_a.t()[::2, 10:100]            # 200 x 90, non-contiguous
    b = base_b[:, ::3][:90, :]             # 90 x 100, strided
    assert torch.equal(engine.gemm(a, b), engine.gemm(a.contiguous(), b.contiguous()))
    row = torch.randn(1, 90, generator=g).expand(33, 90)  # stride-0 rows
    assert torch.equal(engine.gemm(row, b), engine.gemm(row.contiguous(), b))
    a3 = torch.randn(3, 5, 90, generator=g)
    assert torch.equal(engine.gemm(a3, b), engine.gemm(a3.reshape(15, 90), b).reshape(3, 5, 100))
    ni = torch._neg_view(torch.randint(-127, 128, (20, 90), dtype=torch.int8, generator=g))
    bi = torch.randint(-128, 128, (90, 30), dtype=torch.int8, generator=g)
    assert ni.is_neg()
    assert torch.equal(engine.gemm(ni, bi, out_dtype=torch.int32), ni.resolve_neg().int() @ bi.int())
    ai = torch.randint(-100, 100, (64, 90), dtype=torch.int16, generator=g)
    assert torch.equal(engine.gemm(ai.t().contiguous().t(), b.t().round().to(torch.int16).t(),
                                   out_dtype=torch.int64),
                       ai.long() @ b.round().long())


def test_size_one_dims_with_odd_strides_give_identical_results() -> None:
    """A K=1 product whose size-1 dims have arbitrary strides (attention with one-element heads, from
    transposes) equals the contiguous computation: the integer GEMM must not read those strides."""
    g = torch.Generator().manual_seed(6)
    a = torch.randn(3, 2, 1, generator=g).transpose(0, 1)      # [2, 3, 1], strides (1, 2, 1)
    b = torch.randn(40, 2, 1, generator=g).permute(1, 2, 0)    # [2, 1, 40], strides (1, 1, 2)
    assert torch.equal(engine.gemm(a, b), engine.gemm(a.contiguous(), b.contiguous()))
    ai = torch.randint(-128, 128, (33, 1), dtype=torch.int8, generator=g)
    bi = torch.randint(-128, 128, (9, 1), dtype=torch.int8, generator=g).t()   # [1, 9], strides (1, 1)
    assert torch.equal(engine.gemm(ai, bi, out_dtype=torch.int32), ai.int() @ bi.int())


def test_batched_matches_per_batch_and_torch() -> None:
    strict()
    g = torch.Generator().manual_seed(6)
    a = torch.randn(4, 60, 300, generator=g)
    b = torch.randn(4, 300, 20, generator=g)
    out = engine.gemm(a, b)
    assert out.shape == (4, 60, 20)
    for i in range(4):
        assert torch.equal(out[i], engine.gemm(a[i], b[i]))
    shared = torch.randn(1, 300, 20, generator=g).expand(4, 300, 20)
    assert torch.equal(engine.gemm(a, shared)[2], engine.gemm(a[2], shared[0]))
    ai = torch.randint(-128, 128, (3, 17, 500), dtype=torch.int8, generator=g)
    bi = torch.randint(-128, 128, (3, 500, 9), dtype=torch.int8, generator=g)
    assert torch.equal(engine.gemm(ai, bi, out_dtype=torch.int32), torch.bmm(ai.int(), bi.int()))


def _torch_error(fn) -> str:
    with pytest.raises((RuntimeError, NotImplementedError)) as e:
        fn()
    return str(e.value)


@pytest.mark.parametrize("a,b", [
    (torch.ones(2, 3), torch.ones(4, 5)),
    (torch.ones(2, 3), torch.ones(3, 2, dtype=torch.float64)),
    (torch.ones(3), torch.ones(3, 2)),
    (torch.ones(2, 3), torch.ones(3)),
    (torch.ones(2, 3, 4), torch.ones(3, 4, 5)),
    (torch.ones(2, 3, 4), torch.ones(2, 5, 5)),
    (torch.ones(2, 3), torch.ones(2, 3, 4)),
    (torch.ones(2, 2, dtype=torch.int8), torch.ones(2, 2, dtype=torch.int16)),
])
def test_shape_and_dtype_errors_like_torch(a: torch.Tensor, b: torch.Tensor) -> None:
    ref = torch.bmm if b.dim() == 3 else torch.mm
    want = _torch_error(lambda: ref(a, b))
    got = _torch_error(lambda: engine.gemm(a, b))
    assert got == want


def test_unsupported_dtypes_raise() -> None:
    with pytest.raises(NotImplementedError, match="does not support torch.bool"):
        engine.gemm(torch.ones(2, 2, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(NotImplementedError, match="complex64"):
        engine.gemm(torch.ones(2, 2, dtype=torch.complex64), torch.ones(2, 2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="only for integer inputs"):
        engine.gemm(torch.ones(2, 2), torch.ones(2, 2), out_dtype=torch.float64)
    with pytest.raises(ValueError, match="CPU tensors"):
        engine.gemm(torch.ones(2, 2, device="meta"), torch.ones(2, 2, device="meta"))


# ---------------------------------------------------------------- tiling and scheduling


def test_only_edge_tiles_are_padded_fixed_kernel() -> None:
    strict(FIXED)
    a, b = torch.ones(300, 700, dtype=torch.int8), torch.ones(700, 520, dtype=torch.int8)
    assert torch.equal(engine.gemm(a, b, out_dtype=torch.int32), torch.full((300, 520), 700, dtype=torch.int32))
    units = engine.stats()["units"]
    calls = sum(u["calls"] for u in units.values())
    padded = sum(u["padded_calls"] for u in units.values())
    assert calls == 2 * 3 * 3            # blocks of 256: m 256+44, n 256+256+8, k 256+256+188
    assert padded == calls - 1 * 2 * 2   # only calls touching an edge block are padded
    assert sum(u["tiles"] for u in units.values()) == calls


def test_runtime_kernel_uses_large_calls_and_pads_to_tile_multiples() -> None:
    strict(RUNTIME)
    a, b = torch.ones(300, 1152, dtype=torch.int8), torch.ones(1152, 520, dtype=torch.int8)
    engine.gemm(a, b, out_dtype=torch.int32)
    units = engine.stats()["units"]
    assert sum(u["calls"] for u in units.values()) == 3 * 2   # n: 256+256+8(->64), k: 1024+128; m in one
    assert sum(u["padded_calls"] for u in units.values()) == 2  # the n edge only (m tile 1, k multiple of 64)
    tiles = sum(u["tiles"] for u in units.values())
    assert tiles == 300 * (4 + 4 + 1) * (16 + 2)


@pytest.mark.parametrize("large_calls", [False, True])
def test_ref_units_in_large_call_mode_get_edge_calls_unpadded(large_calls: bool) -> None:
    """Hardware-limited units see tile-multiple calls; the large-call golden model sees the edges as they are
    (it is exact for any shape) and the results are the same."""
    engine.use("ref", kernel=RUNTIME, units=1, large_calls=large_calls)
    unit = registry.active().units[0]
    seen: list[tuple[int, int, int]] = []
    run, run_stack = unit._run, unit.run_stack
    unit._run = lambda a, b: (seen.append((a.shape[0], b.shape[1], a.shape[1])), run(a, b))[1]
    unit.run_stack = lambda a, b, *c: (seen.append((a.shape[1], b.shape[2], a.shape[2])), run_stack(a, b, *c))[1]
    g = torch.Generator().manual_seed(3)
    a = torch.randint(-128, 128, (300, 1100), dtype=torch.int8, generator=g)
    b = torch.randint(-128, 128, (1100, 70), dtype=torch.int8, generator=g)
    assert torch.equal(engine.gemm(a, b, out_dtype=torch.int32), a.int() @ b.int())
    tile = (RUNTIME.tile.m, RUNTIME.tile.n, RUNTIME.tile.k)
    padded = [all(d % t == 0 for d, t in zip(s, tile)) for s in seen]
    if large_calls:
        assert seen == [(300, 70, 1100)]
    else:
        assert all(padded) and (300, 128, 1024) in seen
    assert engine.stats()["units"][unit.name]["padded_calls"] >= 1  # counted as padded calls either way


def test_every_unit_receives_tiles() -> None:
    strict(FIXED, units=3)
    g = torch.Generator().manual_seed(7)
    a = torch.randint(-128, 128, (512, 1024), dtype=torch.int8, generator=g)
    b = torch.randint(-128, 128, (1024, 512), dtype=torch.int8, generator=g)
    assert torch.equal(engine.gemm(a, b, out_dtype=torch.int32), a.int() @ b.int())
    tiles = engine.stats()["tiles_per_unit"]
    assert sorted(tiles) == ["ref0", "ref1", "ref2"]
    assert sum(tiles.values()) == 2 * 2 * 4 and min(tiles.values()) >= 5


def test_concurrent_threads_give_correct_results() -> None:
    strict(FIXED, units=2)
    g = torch.Generator().manual_seed(8)
    jobs = [(torch.randint(-128, 128, (260 + 7 * i, 300), dtype=torch.int8, generator=g),
             torch.randint(-128, 128, (300, 270 - 5 * i), dtype=torch.int8, generator=g)) for i in range(6)]
    floats = [(torch.randn(100 + i, 300, generator=g), torch.randn(300, 40, generator=g)) for i in range(6)]
    want_f = [engine.gemm(a, b) for a, b in floats]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(3):
                a, b = jobs[i]
                assert torch.equal(engine.gemm(a, b, out_dtype=torch.int32), a.int() @ b.int())
                fa, fb = floats[i]
                assert torch.equal(engine.gemm(fa, fb), want_f[i])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_unit_failure_propagates() -> None:
    strict(FIXED)
    unit = registry.active().units[1]

    def boom(a, b):
        raise RuntimeError("unit exploded")

    unit._run = boom
    with pytest.raises(RuntimeError, match="unit exploded"):
        engine.gemm(torch.ones(600, 300, dtype=torch.int8), torch.ones(300, 600, dtype=torch.int8),
                    out_dtype=torch.int32)


def test_stats_report_phases_and_reset() -> None:
    strict(FIXED)
    engine.gemm(torch.randn(300, 300), torch.randn(300, 300))
    s = engine.stats()
    assert s["target"] == "ref" and s["kernel"] == "fixed256"
    for phase in ("quantize", "prepare", "run", "collect", "dequantize"):
        assert s["phases_s"][phase] > 0
    assert s["counters"]["gemm_float"] == 1 and s["counters"]["kernel_calls"] == 8
    engine.reset_stats()
    assert engine.stats()["units"] == {} and engine.stats()["counters"] == {}


def test_next_call_is_prepared_while_the_unit_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Double buffering: during a unit's first call, its other worker prepares the next call."""
    from pynqtorch.engine import scheduler as sched

    strict(FIXED, units=1)
    prepared = threading.Semaphore(0)
    original = sched._Job.prepare

    def counting(self, task):
        out = original(self, task)
        prepared.release()
        return out

    monkeypatch.setattr(sched._Job, "prepare", counting)
    unit = registry.active().units[0]
    overlapped: list[bool] = []
    run = unit._run

    def first_waits(a, b):
        if not overlapped:
            # This call's own preparation released once; the next call's must follow while we hold the unit.
            overlapped.append(prepared.acquire(timeout=30) and prepared.acquire(timeout=30))
        return run(a, b)

    unit._run = first_waits
    a = torch.ones(512, 256, dtype=torch.int8)
    out = engine.gemm(a, a.t().contiguous(), out_dtype=torch.int32)
    assert overlapped == [True]
    assert torch.equal(out, torch.full((512, 512), 256, dtype=torch.int32))


def test_host_accumulator_bound_is_checked() -> None:
    from pynqtorch.engine.limbs import Operand, check_host_sum

    op = Operand(torch.empty(0, dtype=torch.int8), 1, 128, 8)
    check_host_sum(1 << 40, op, op)
    with pytest.raises(OverflowError, match="int64 host accumulator"):
        check_host_sum(1 << 48, op, op)


@pytest.mark.parametrize("kernel", ["gemm_i8_packed", "gemm_i8_dsp"])
def test_every_target_matches_ref_bit_for_bit(target, kernel: str) -> None:
    """The engine on each target (the kernel's own C++, the board) gives exactly the ref results (integers and
    quantized floats)."""
    if target.name == "board" and kernel != "gemm_i8_packed":
        pytest.skip("the virtual board's overlay runs gemm_i8_packed")
    g = torch.Generator().manual_seed(9)
    a = torch.randint(-128, 128, (300, 520), dtype=torch.int8, generator=g)
    b = torch.randint(-128, 128, (520, 70), dtype=torch.int8, generator=g)
    x, w = torch.randn(40, 300, generator=g), torch.randn(300, 20, generator=g)
    engine.use("ref", kernel=kernel)
    want_f = engine.gemm(x, w)
    target.use(kernel)
    engine.reset_stats()
    assert torch.equal(engine.gemm(a, b, out_dtype=torch.int32), a.int() @ b.int())
    assert torch.equal(engine.gemm(x, w), want_f)
    assert all(name.startswith(target.name) for name in engine.stats()["tiles_per_unit"])


@pytest.mark.parametrize("name", ["ref", "csim"])
@pytest.mark.parametrize("config", [engine.QuantConfig(), engine.QuantConfig.per_tensor(),
                                    engine.QuantConfig(weights="per_tensor")])
def test_direct_float_path_equals_the_general_path(name: str, config: engine.QuantConfig,
                                                   monkeypatch: pytest.MonkeyPatch, fresh_target: None) -> None:
    """`engine.gemm`'s direct path (native passes straight, the built-in line schemes) gives the general path's
    results bit for bit on every case it takes: a cached weight, a dynamic B, batched products, convolution
    patches (plain and depthwise), a 3-D A; on the golden model and the kernel's C++."""
    from pynqtorch.engine import api

    if (reason := registry.unavailable_reason(name)) is not None:
        pytest.skip(f"{name} unavailable: {reason}")
    registry.use(name, kernel="gemm_i8_packed")
    g = torch.Generator().manual_seed(11)
    w, x3 = torch.randn(40, 24, generator=g), torch.randn(2, 7, 24, generator=g)
    x, cw = torch.randn(2, 6, 9, 9, generator=g), torch.randn(5, 6, 3, 3, generator=g)
    dw = torch.randn(6, 9, 1, generator=g)
    cases = {
        "weight": lambda: engine.gemm(x3[0], w.t(), weight=True, config=config),
        "3-D A": lambda: engine.gemm(x3, w.t(), weight=True, config=config),
        "dynamic B": lambda: engine.gemm(x3[0], w[:24].t().contiguous(), config=config),
        "batched": lambda: engine.gemm(x3, torch.randn(2, 24, 5, generator=torch.Generator().manual_seed(3)),
                                       config=config),
        "conv": lambda: engine.gemm(engine.Patches(x, (3, 3), (1, 1), (1, 1), (1, 1), 1, (9, 9)),
                                    cw.permute(2, 3, 1, 0).reshape(54, 5), weight=True, config=config),
        "depthwise": lambda: engine.gemm(engine.Patches(x, (3, 3), (2, 2), (0, 0), (1, 1), 6, (4, 4)), dw,
                                         weight=True, config=config),
    }
    taken = []
    fast = api._fast_float

    def counted(*args: Any) -> torch.Tensor | None:
        out = fast(*args)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(api, "_fast_float", counted)
    direct = {k: f() for k, f in cases.items()}
    assert taken == [True] * len(cases)
    kept = ("gemm_float", "limb_products", "kernel_calls")  # the same bookkeeping (the weights are cached now)
    counters = {k: engine.stats()["counters"][k] for k in kept}
    monkeypatch.setattr(api, "_fast_float", lambda *a: None)
    engine.reset_stats()
    for k, f in cases.items():
        assert torch.equal(direct[k], f()), k
    assert {k: engine.stats()["counters"][k] for k in kept} == counters


def test_weight_cache_counts_once_per_call_when_the_direct_path_declines(fresh_target: None) -> None:
    """A NaN in A makes the native pass decline: the general path then runs on the weight already prepared
    (one cache lookup per call, as the counters say)."""
    w = torch.randn(16, 8)
    a = torch.randn(4, 16)
    a[1, 3] = float("nan")
    for _ in range(2):
        c = engine.gemm(a, w, weight=True)
    assert c[1].isnan().all() and c[[0, 2, 3]].isfinite().all()
    counters = engine.stats()["counters"]
    assert counters["weight_quantizations"] == 1 and counters["weight_cache_hits"] == 1
    assert counters["gemm_float"] == 2 and counters["nonfinite_patches"] == 2


@pytest.mark.parametrize("name", ["ref", "csim"])
@pytest.mark.parametrize("config", [engine.QuantConfig(), engine.QuantConfig.per_tensor(),
                                    engine.QuantConfig(weights="per_tensor"),
                                    engine.QuantConfig(weights="per_group_32")])
def test_bound_gemm_equals_gemm(name: str, config: engine.QuantConfig, fresh_target: None) -> None:
    """`engine.bind` (the weight looked up once; on `ref` small products in one native pass with their additions)
    gives `gemm` followed by ``add_(bias)`` and ``add_(add)`` bit for bit, with the same kernel-call count: few
    rows and many (past `HOST_VOLUME`), a row of zeros, rows with NaN/Inf, a strided A, with and without the
    additions, operands so large that dequantizing takes float64, on the golden model and the kernel's C++."""
    from pynqtorch.engine import api

    if (reason := registry.unavailable_reason(name)) is not None:
        pytest.skip(f"{name} unavailable: {reason}")
    registry.use(name, kernel="gemm_i8_packed")
    g = torch.Generator().manual_seed(12)
    w, bias = torch.randn(96, 64, generator=g), torch.randn(96, generator=g)
    bound = engine.bind(w.t(), owner=w, version=0, config=config)
    special = torch.randn(3, 64, generator=g)
    special[1] = 0
    special[2, 5] = float("nan")
    rows = {"two": torch.randn(2, 64, generator=g), "strided": torch.randn(3, 128, generator=g)[:, ::2],
            "many": torch.randn(api.HOST_VOLUME // (64 * 96) + 1, 64, generator=g), "special": special,
            "inf": torch.full((1, 64), float("inf")),
            "huge": torch.randn(2, 64, generator=g) * 1e32}  # the dequantization's float64 guard trips
    for label, a in rows.items():
        add = torch.randn(a.shape[0], 96, generator=g)
        for extra in ((), (bias,), (bias, add), (None, add)):
            engine.reset_stats()
            got = bound(a, *extra)
            calls = engine.stats()["counters"]["kernel_calls"]
            engine.reset_stats()
            want = engine.gemm(a, w.t(), weight=True, owner=w, version=0, config=config)
            for t in extra:
                if t is not None:
                    want.add_(t)
            assert torch.equal(got.isnan(), want.isnan()), (label, len(extra))
            assert torch.equal(got.nan_to_num(), want.nan_to_num()), (label, len(extra))
            assert calls == engine.stats()["counters"]["kernel_calls"], (label, len(extra))


def test_bound_gemm_takes_the_native_pass_on_exact_units_only(fresh_target: None) -> None:
    """Small products of a bound weight are one native pass on `ref` in large-call mode (counted as a call of a
    ref unit), and the units' own products on `ref` with hardware-sized calls and on csim."""
    w = torch.randn(48, 32)
    a = torch.randn(2, 32)
    for name, kwargs, native in (("ref", {}, True), ("ref", {"large_calls": False}, False), ("csim", {}, False)):
        if registry.unavailable_reason(name) is not None:
            continue
        registry.use(name, kernel="gemm_i8_packed", **kwargs)
        engine.reset_stats()
        out = engine.bind(w.t(), owner=w, version=0)(a)
        st = engine.stats()
        assert st["counters"].get("host_gemms", 0) == int(native), name
        assert st["counters"]["kernel_calls"] == 1 and sum(u["calls"] for u in st["units"].values()) == 1
        assert all(u.startswith(name) for u in st["units"]), st["units"]
        assert torch.equal(out, engine.gemm(a, w.t(), weight=True, owner=w, version=0))


def test_small_gemms_on_exact_units_run_inline_with_the_pools_results(monkeypatch: pytest.MonkeyPatch,
                                                                       fresh_target: None) -> None:
    """A GEMM of several calls within `INLINE_WORK` on `ref` runs its calls in the caller's thread, spread over the
    units as the pool spreads them, with the pool's results bit for bit (float and exact integer)."""
    from pynqtorch.engine import scheduler

    registry.use("ref", kernel="gemm_i8_packed")
    g = torch.Generator().manual_seed(13)
    x, w = torch.randn(20, 5000, generator=g), torch.randn(5000, 6, generator=g)  # two calls of <= 4096 along K
    a, b = torch.randint(-128, 128, (20, 5000), dtype=torch.int8, generator=g), torch.randint(
        -128, 128, (5000, 3), dtype=torch.int8, generator=g)
    results, threads = {}, {}
    run = scheduler.Scheduler._run
    for label, limit in (("inline", scheduler.INLINE_WORK), ("pool", 0)):
        monkeypatch.setattr(scheduler, "INLINE_WORK", limit)
        seen: set[str] = set()

        def spy(self: scheduler.Scheduler, *args: Any, _run: Any = run, _seen: set[str] = seen) -> Any:
            _seen.add(threading.current_thread().name)
            return _run(self, *args)

        monkeypatch.setattr(scheduler.Scheduler, "_run", spy)
        engine.reset_stats()
        results[label] = (engine.gemm(x, w), engine.gemm(a, b, out_dtype=torch.int32))
        threads[label] = seen
        assert engine.stats()["counters"]["kernel_calls"] == 4
        assert all(u["calls"] == 2 for u in engine.stats()["units"].values())
    assert threads["inline"] == {threading.main_thread().name}
    assert threading.main_thread().name not in threads["pool"]
    assert all(torch.equal(i, p) for i, p in zip(results["inline"], results["pool"], strict=True))


def test_gemm_cut_only_along_m_is_one_product_counted_as_its_calls(monkeypatch: pytest.MonkeyPatch,
                                                                   fresh_target: None) -> None:
    """On the large-call golden model a GEMM whose N and K fit one call but M does not runs as one stacked product
    (one unit invocation), counted as the calls of its M blocks (kernel calls, unit calls, padded calls), with the
    results of its row blocks computed apart bit for bit (float per-row quantization, exact integers, a batch; the
    engine's own native pass for int8 stacks is off here, see the next tests)."""
    from pynqtorch import hostops
    from pynqtorch.hw.tiling import blocks

    monkeypatch.setattr(hostops, "stack_product", lambda *a, **kw: None)
    registry.use("ref", kernel="gemm_i8_packed")
    active = registry.active()
    unit_calls = [0]
    for unit in active.units:
        run_stack = unit.run_stack
        unit.run_stack = lambda a, b, *c, _r=run_stack: (unit_calls.__setitem__(0, unit_calls[0] + 1), _r(a, b, *c))[1]
    m_limit = active.limits.m
    rows = 2 * m_limit + 37
    calls = len(blocks(rows, active.desc.tile.m, m_limit))
    assert calls == 3
    g = torch.Generator().manual_seed(21)
    x, w = torch.randn(rows, 25, generator=g), torch.randn(25, 6, generator=g)
    a = torch.randint(-128, 128, (2, rows, 40), dtype=torch.int8, generator=g)
    b = torch.randint(-128, 128, (2, 40, 3), dtype=torch.int8, generator=g)
    engine.reset_stats()
    got = engine.gemm(x, w, weight=True, owner=w, version=0)
    got_int = engine.gemm(a, b, out_dtype=torch.int32)
    st = engine.stats()
    assert unit_calls[0] == 2
    assert st["counters"]["kernel_calls"] == 2 * calls == sum(u["calls"] for u in st["units"].values())
    assert sum(u.calls for u in active.units) == 2 * calls
    assert sum(u["padded_calls"] for u in st["units"].values()) == 2 * calls  # N=6 and N=3 pad every call
    assert torch.equal(got_int, a.int() @ b.int())
    cut = [engine.gemm(x[s:s + size], w, weight=True, owner=w, version=0) for s, size, _ in
           blocks(rows, active.desc.tile.m, m_limit)]
    assert torch.equal(got, torch.cat(cut))


@pytest.mark.parametrize("config", [engine.QuantConfig(), engine.QuantConfig.per_tensor(),
                                    engine.QuantConfig(weights="per_tensor")])
def test_small_products_of_cached_weights_are_one_native_pass_with_the_units_results(
        config: engine.QuantConfig, fresh_target: None) -> None:
    """On the large-call golden model a small product of a cached weight (``M·K·N <= HOST_VOLUME``) is one native
    pass counted as one unit call, with the bits of the units' own products (ref with hardware-sized calls, whose
    units are not exact): few rows, a zero row, NaN/Inf rows, a strided A, operands needing float64 dequantization;
    an uncached weight, a product past `HOST_VOLUME` or with many columns beyond the pass's vector blocks
    (`_HOST_TAIL`) take the units' product."""
    from pynqtorch.engine import api

    g = torch.Generator().manual_seed(31)
    w = torch.randn(96, 64, generator=g)
    special = torch.randn(3, 64, generator=g)
    special[1] = 0
    special[2, 5] = float("nan")
    zero = torch.randn(3, 64, generator=g)
    zero[1] = 0
    rows = {"two": torch.randn(2, 64, generator=g), "zero": zero, "strided": torch.randn(3, 128, generator=g)[:, ::2],
            "special": special, "inf": torch.full((1, 64), float("inf")),
            "huge": torch.randn(2, 64, generator=g) * 1e32,
            "many": torch.randn(api.HOST_VOLUME // (64 * 96) + 1, 64, generator=g)}
    results: dict[str, list[torch.Tensor]] = {}
    for label, kwargs in (("host", {}), ("units", {"large_calls": False})):
        registry.use("ref", kernel="gemm_i8_packed", **kwargs)
        engine.reset_stats()
        results[label] = [engine.gemm(a, w.t(), weight=True, owner=w, version=0, config=config) for a in rows.values()]
        host = engine.stats()["counters"].get("host_gemms", 0)
        assert host == (2 if label == "host" else 0)  # "two" and "zero": the others decline or are too large
        st = engine.stats()
        assert st["counters"]["kernel_calls"] == sum(u["calls"] for u in st["units"].values())
    for label, got, want in zip(rows, results["host"], results["units"], strict=True):
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num()), label
    registry.use("ref", kernel="gemm_i8_packed")
    w10 = torch.randn(10, 512, generator=g)  # 10 columns, all outside the pass's vector blocks: too slow there
    engine.reset_stats()
    engine.gemm(torch.randn(64, 512, generator=g), w10.t(), weight=True, owner=w10, version=0, config=config)
    assert engine.stats()["counters"].get("host_gemms", 0) == 0
    engine.reset_stats()
    with torch.inference_mode():  # an inference tensor is quantized per call, never cached: the units' product
        wi = w.clone()
        assert torch.equal(engine.gemm(rows["two"], wi.t(), weight=True, config=config), results["units"][0])
    assert engine.stats()["counters"].get("host_gemms", 0) == 0


@pytest.mark.parametrize("n", [1, 10, 16, 20, 33])
def test_native_rows_pass_equals_the_units_product_for_any_column_count(n: int, fresh_target: None) -> None:
    """The one-pass native product (its weight padded to whole vector blocks of 16 columns) gives the units' own
    product bit for bit, bias added, whatever the column count."""
    g = torch.Generator().manual_seed(n)
    w, bias, a = torch.randn(n, 84, generator=g), torch.randn(n, generator=g), torch.randn(32, 84, generator=g)
    results = {}
    for label, kwargs in (("host", {}), ("units", {"large_calls": False})):
        registry.use("ref", kernel="gemm_i8_packed", **kwargs)
        engine.reset_stats()
        results[label] = engine.bind(w.t(), owner=w, version=0)(a, bias)
        assert engine.stats()["counters"].get("host_gemms", 0) == (label == "host")
    assert torch.equal(results["host"], results["units"])


def test_activation_products_are_one_native_pass_with_the_general_paths_bits(monkeypatch: pytest.MonkeyPatch,
                                                                              fresh_target: None) -> None:
    """`engine.activation_gemm` (attention's products: heads as two batch dims, q's scale, the output in q's layout)
    equals `gemm` of the materialized operands on ref and on csim bit for bit, is one native pass per call on the
    exact units counted as the scheduler's stack call(s), and declines what it does not take."""
    from pynqtorch import hostops

    if not hostops._vnni():
        pytest.skip("no AVX-512 VNNI on this CPU")
    g = torch.Generator().manual_seed(23)
    q, k = (torch.randn(2, 9, 3, 8, generator=g).transpose(1, 2) for _ in range(2))  # [B, H, L, E] of [B, L, H, E]
    kt = k.transpose(-2, -1)
    want = {}
    for name in ["ref"] + ([] if registry.unavailable_reason("csim") else ["csim"]):
        registry.use(name, kernel="gemm_i8_packed")
        want[name] = engine.gemm((q * 0.3).reshape(6, 9, 8), kt.reshape(6, 8, 9)).view(2, 3, 9, 9)
        if name == "csim":
            assert engine.activation_gemm(q, kt, scale=0.3) is None  # not exact units: the caller runs gemm
            assert torch.equal(want["csim"], want["ref"])
    registry.use("ref", kernel="gemm_i8_packed")
    out = torch.empty(2, 9, 3, 9).transpose(1, 2)  # q's layout
    engine.reset_stats()
    assert engine.activation_gemm(q, kt, scale=0.3, out=out) is out
    counters = engine.stats()["counters"]
    assert counters["host_gemms"] == counters["kernel_calls"] == 1
    assert torch.equal(out, want["ref"])
    monkeypatch.setattr(hostops, "stack_gemm", lambda *a, **kw: None)
    assert torch.equal(engine.gemm((q * 0.3).reshape(6, 9, 8), kt.reshape(6, 8, 9)).view(2, 3, 9, 9), out)
    monkeypatch.undo()
    rows = registry.active().limits.m + 5  # M beyond one call: counted as the scheduler's M blocks
    engine.reset_stats()
    assert engine.activation_gemm(torch.randn(2, rows, 4), torch.randn(2, 4, 3)) is not None
    assert engine.stats()["counters"]["kernel_calls"] == 2
    with engine.quant_config(activations="per_tensor"):
        assert engine.activation_gemm(q, kt) is None
    q[0, 0, 0, 0] = float("nan")
    assert engine.activation_gemm(q, kt) is None


def test_int8_stacks_on_exact_units_are_one_native_pass_with_the_units_results(monkeypatch: pytest.MonkeyPatch,
                                                                               fresh_target: None) -> None:
    """A stack of int8 products that the scheduler would hand a stacking unit as one call is computed by the engine
    (`hostops.stack_product`) on exact units, counted as that call, with the unit's (`golden_stack`'s) results."""
    from pynqtorch import hostops

    registry.use("ref", kernel="gemm_i8_packed")
    g = torch.Generator().manual_seed(24)
    a = torch.randint(-128, 128, (5, 33, 70), dtype=torch.int8, generator=g)
    b = torch.randint(-128, 128, (5, 70, 19), dtype=torch.int8, generator=g)
    engine.reset_stats()
    got = engine.gemm(a, b, out_dtype=torch.int32)
    counters = engine.stats()["counters"]
    assert counters["host_stack_products"] == counters["kernel_calls"] == 1
    monkeypatch.setattr(hostops, "stack_product", lambda *a, **kw: None)
    engine.reset_stats()
    assert torch.equal(engine.gemm(a, b, out_dtype=torch.int32), got)  # the unit's golden_stack
    assert "host_stack_products" not in engine.stats()["counters"]
    assert torch.equal(got, torch.bmm(a.long(), b.long()).int())
    monkeypatch.undo()
    active = registry.active()  # M beyond one call: counted as the scheduler's M blocks, on the units
    a = torch.randint(-128, 128, (2, active.limits.m + 5, 8), dtype=torch.int8, generator=g)
    engine.reset_stats()
    assert torch.equal(engine.gemm(a, b[:2, :8], out_dtype=torch.int32), torch.bmm(a.long(), b[:2, :8].long()).int())
    st = engine.stats()
    assert st["counters"]["kernel_calls"] == 2 == sum(u["calls"] for u in st["units"].values())
