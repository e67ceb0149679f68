"""GEMM-family aten ops on zynq tensors: accuracy vs CPU, exact integers, errors, caching, threads."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import pynqtorch
from pynqtorch import engine
from pynqtorch.targets import registry

# Per-row activations × per-channel weights on Gaussian data: relative Frobenius error well under 2 %.
TOL = {"default": 0.02, "per_tensor": 0.05}


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30)).item()


def accelerated_calls(name: str) -> int:
    s = pynqtorch.report().accelerated.get(name)
    return 0 if s is None else s.calls


pytestmark = pytest.mark.usefixtures("fresh_report")


@pytest.mark.parametrize("shape_a,shape_b", [
    ((7, 13), (13, 5)), ((13,), (13, 5)), ((7, 13), (13,)), ((13,), (13,)), ((2, 7, 13), (13, 5)),
    ((7, 13), (3, 13, 5)), ((2, 1, 7, 13), (3, 13, 5)), ((4, 7, 13), (4, 13, 5)), ((2, 3, 7, 13), (2, 3, 13, 5)),
    ((300, 600), (600, 70)),
])
def test_matmul_broadcasting_matches_cpu(shape_a, shape_b):
    torch.manual_seed(0)
    a, b = torch.randn(shape_a), torch.randn(shape_b)
    want = a @ b
    got = (a.to("zynq") @ b.to("zynq"))
    assert got.device.type == "zynq" and got.shape == want.shape and got.dtype == want.dtype
    assert rel_err(got.cpu(), want) < TOL["default"]
    rep = pynqtorch.report()
    assert sum(s.calls for s in rep.accelerated.values()) >= 1, rep
    assert not {"aten::mm", "aten::bmm", "aten::mv", "aten::dot"} & set(rep.cpu), rep


def test_each_gemm_op_runs_on_the_kernel():
    torch.manual_seed(1)
    m, k, n, bsz = 9, 33, 6, 3
    A, B, C = torch.randn(m, k), torch.randn(k, n), torch.randn(m, n)
    BA, BB, BC = torch.randn(bsz, m, k), torch.randn(bsz, k, n), torch.randn(bsz, m, n)
    v, w = torch.randn(k), torch.randn(m)
    z = lambda t: t.to("zynq")
    cases = {
        "aten::mm": (torch.mm(z(A), z(B)), A @ B),
        "aten::addmm": (torch.addmm(z(C), z(A), z(B), beta=0.5, alpha=2.0), torch.addmm(C, A, B, beta=0.5, alpha=2)),
        "aten::bmm": (torch.bmm(z(BA), z(BB)), torch.bmm(BA, BB)),
        "aten::baddbmm": (torch.baddbmm(z(BC), z(BA), z(BB), alpha=-1.0), torch.baddbmm(BC, BA, BB, alpha=-1)),
        "aten::mv": (torch.mv(z(A), z(v)), torch.mv(A, v)),
        "aten::addmv": (torch.addmv(z(w), z(A), z(v), beta=2.0), torch.addmv(w, A, v, beta=2)),
        "aten::dot": (torch.dot(z(v), z(v)), torch.dot(v, v)),
    }
    for name, (got, want) in cases.items():
        assert got.shape == want.shape, name
        assert rel_err(got.cpu(), want) < TOL["default"], name
        assert accelerated_calls(name) == 1, (name, pynqtorch.report())


def test_linear_and_mlp_match_cpu():
    torch.manual_seed(2)
    mlp = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 10)).eval()
    x = torch.randn(17, 64)
    want = mlp(x)
    with torch.no_grad():
        got = mlp.to("zynq")(x.to("zynq")).cpu()
    assert rel_err(got, want.detach()) < TOL["default"]
    assert accelerated_calls("aten::addmm") == 2
    assert any(op.startswith("aten::gelu") for op in pynqtorch.report().cpu)


@pytest.mark.parametrize("scheme", ["default", "per_tensor"])
def test_quantization_schemes_have_documented_error(scheme):
    torch.manual_seed(3)
    a, b = torch.randn(64, 256), torch.randn(256, 48)
    cfg = pynqtorch.QuantConfig() if scheme == "default" else pynqtorch.QuantConfig.per_tensor()
    with pynqtorch.quant_config(cfg):
        got = (a.to("zynq") @ b.to("zynq")).cpu()
    assert rel_err(got, a @ b) < TOL[scheme]


def test_per_channel_beats_per_tensor_on_skewed_weights():
    torch.manual_seed(4)
    a = torch.randn(32, 128)
    w = torch.randn(128, 16) * torch.logspace(-3, 1, 16)  # output channels of very different ranges
    errs = {}
    for name, cfg in (("pc", pynqtorch.QuantConfig()), ("pt", pynqtorch.QuantConfig.per_tensor())):
        with pynqtorch.quant_config(cfg):
            got = (a.to("zynq") @ w.to("zynq")).cpu()
        errs[name] = max(rel_err(got[:, j], (a @ w)[:, j]) for j in range(16))
    assert errs["pc"] < 0.02 < errs["pt"], errs


def test_module_quant_config_overrides_global():
    torch.manual_seed(5)
    lin = nn.Linear(128, 16, bias=False)
    with torch.no_grad():
        lin.weight.mul_(torch.logspace(-3, 1, 16).unsqueeze(1))
    x = torch.randn(8, 128)
    want = lin(x).detach()
    zl = lin.to("zynq")
    with torch.no_grad():
        default = zl(x.to("zynq")).cpu()
        pynqtorch.set_module_quant_config(zl, pynqtorch.QuantConfig.per_tensor())
        assert pynqtorch.module_quant_config(zl) == pynqtorch.QuantConfig.per_tensor()
        coarse = zl(x.to("zynq")).cpu()
        pynqtorch.set_module_quant_config(zl, None)
        again = zl(x.to("zynq")).cpu()
    worst = lambda g: max(rel_err(g[:, j], want[:, j]) for j in range(16))
    assert worst(default) < 0.02 < worst(coarse)
    assert torch.equal(default, again)
    assert pynqtorch.get_quant_config() == pynqtorch.QuantConfig()


# Operand ranges chosen so every exact result fits torch's result dtype (the operands' dtype).
@pytest.mark.parametrize("dtype,bound", [(torch.int8, 3), (torch.int16, 20), (torch.int32, 4000),
                                         (torch.int64, 2 ** 20), (torch.uint8, 3)])
def test_integer_matmul_is_exact(dtype, bound):
    torch.manual_seed(6)
    lo = 0 if dtype == torch.uint8 else -bound
    a = torch.randint(lo, bound + 1, (19, 40), dtype=dtype)
    b = torch.randint(lo, bound + 1, (40, 11), dtype=dtype)
    got = (a.to("zynq") @ b.to("zynq")).cpu()
    assert got.dtype == (a @ b).dtype
    assert torch.equal(got, a @ b)


def test_int8_extremes_exact_in_int32():
    # -128·-128 summed over K = 4096 needs several kernel calls and a host-side int64 accumulation.
    a = torch.full((5, 4096), -128, dtype=torch.int32)
    b = torch.full((4096, 3), -128, dtype=torch.int32)
    got = (a.to("zynq") @ b.to("zynq")).cpu()
    assert torch.equal(got, torch.full((5, 3), 128 * 128 * 4096, dtype=torch.int32))


def test_integer_overflow_is_an_error_not_truncation():
    a = torch.full((2, 64), 127, dtype=torch.int8)
    with pytest.raises(OverflowError, match="never truncates"):
        a.to("zynq") @ a.t().to("zynq")
    big = torch.full((2, 4), 2 ** 31 - 1, dtype=torch.int32)
    with pytest.raises(OverflowError):
        big.to("zynq") @ big.t().to("zynq")


def test_nan_inf_positions_match_cpu():
    a = torch.randn(6, 20)
    b = torch.randn(20, 5)
    a[1, 3] = float("nan")
    a[4, 0] = float("inf")
    b[7, 2] = float("-inf")
    want = a @ b
    got = (a.to("zynq") @ b.to("zynq")).cpu()
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    assert torch.equal(got[torch.isinf(want)], want[torch.isinf(want)])
    finite = torch.isfinite(want)
    assert rel_err(got[finite], want[finite]) < TOL["default"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_keep_their_dtype(dtype):
    torch.manual_seed(7)
    a, b = torch.randn(12, 40, dtype=dtype), torch.randn(40, 9, dtype=dtype)
    got = (a.to("zynq") @ b.to("zynq")).cpu()
    assert got.dtype == dtype
    assert rel_err(got, (a.double() @ b.double())) < TOL["default"]


def test_noncontiguous_transposed_expanded_inputs():
    torch.manual_seed(8)
    a = torch.randn(40, 30)[::2, 1::2]  # strided
    b = torch.randn(9, 15).t()  # transposed
    e = torch.randn(15, 1).expand(15, 6)  # expanded (stride 0)
    za, zb, ze = a.to("zynq"), b.to("zynq"), e.to("zynq")
    zs = torch.randn(40, 30).to("zynq")[::2, 1::2]  # a strided view of a zynq tensor
    assert rel_err((za @ zb).cpu(), a @ b) < TOL["default"]
    assert rel_err((za @ ze).cpu(), a @ e) < TOL["default"]
    assert rel_err((zs @ zb).cpu(), zs.cpu() @ b) < TOL["default"]
    assert rel_err((za.t().t() @ zb.t().t()).cpu(), a @ b) < TOL["default"]


@pytest.mark.parametrize("m,k,n", [(0, 5, 3), (4, 0, 3), (4, 5, 0)])
def test_empty_dims(m, k, n):
    a, b = torch.randn(m, k), torch.randn(k, n)
    got = (a.to("zynq") @ b.to("zynq")).cpu()
    assert torch.equal(got, a @ b)


def test_shape_and_dtype_errors_are_torch_style():
    a, b = torch.randn(3, 4).to("zynq"), torch.randn(5, 6).to("zynq")
    with pytest.raises(RuntimeError, match=r"shapes cannot be multiplied \(3x4 and 5x6\)"):
        a @ b
    with pytest.raises(RuntimeError, match="same dtype"):
        torch.mm(a, torch.randn(4, 2, dtype=torch.float64).to("zynq"))
    with pytest.raises(RuntimeError, match="same device|two devices"):
        torch.mm(a, torch.randn(4, 2))


def test_complex_matmul_falls_back_to_cpu_and_is_counted():
    a = torch.randn(3, 4, dtype=torch.complex64)
    b = torch.randn(4, 2, dtype=torch.complex64)
    got = (a.to("zynq") @ b.to("zynq")).cpu()
    torch.testing.assert_close(got, a @ b)
    assert "aten::mm" in pynqtorch.report().cpu


def test_weight_quantized_once_and_invalidated_by_writes():
    torch.manual_seed(9)
    lin = nn.Linear(32, 8).to("zynq")
    x = torch.randn(4, 32).to("zynq")
    engine.reset_stats()
    with torch.no_grad():
        y1 = lin(x).cpu()
        for _ in range(3):
            assert torch.equal(lin(x).cpu(), y1)
    assert engine.stats()["counters"]["weight_quantizations"] == 1
    with torch.no_grad():
        lin.weight.mul_(2)  # in-place through torch
    with torch.no_grad():
        y2 = lin(x).cpu()
    assert engine.stats()["counters"]["weight_quantizations"] == 2
    assert rel_err(y2 - lin.bias.cpu(), 2 * (y1 - lin.bias.cpu())) < 1e-5
    lin.weight.data.copy_(torch.zeros(8, 32))  # bypasses the version counter, not the device
    with torch.no_grad():
        y3 = lin(x).cpu()
    assert engine.stats()["counters"]["weight_quantizations"] == 3
    assert torch.allclose(y3, lin.bias.cpu().expand(4, 8))


@pytest.mark.parametrize("name", ["ref", "csim"])
def test_only_weights_are_cached_b_operands(name, fresh_target):
    """A B operand that is a parameter (or a view of one) takes the weight scheme and one cache entry; any other B
    (an attention's keys, a plain tensor) the activation scheme per call and none. Per-tensor weights and per-row
    activations tell the two apart; ref and csim agree bit for bit."""
    if name == "csim" and (reason := registry.unavailable_reason("csim")) is not None:
        pytest.skip(reason)
    pynqtorch.use(name)
    torch.manual_seed(12)
    q, k = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 9, 8)
    x, w = torch.randn(5, 8), torch.randn(8, 6) * torch.linspace(0.1, 3, 6)
    zq, zk, zx = q.to("zynq"), k.to("zynq"), x.to("zynq")
    param = nn.Parameter(w.to("zynq"), requires_grad=False)
    frozen_view = nn.Parameter(w.t().contiguous().to("zynq")).t()
    with engine.quant_config(weights="per_tensor", activations="per_row"):
        data_kt = engine.gemm(q.reshape(6, 7, 8), k.reshape(6, 9, 8).transpose(1, 2)).view(2, 3, 7, 9)
        data_w, weight_w = engine.gemm(x, w), engine.gemm(x, w, weight=True)
        assert not torch.equal(data_w, weight_w)  # the schemes differ here
        bias = torch.randn(6)
        engine.reset_stats()
        with torch.no_grad():
            for _ in range(3):
                assert torch.equal((zq @ zk.transpose(-2, -1)).cpu(), data_kt)
                assert torch.equal((zx @ w.to("zynq")).cpu(), data_w)
                assert torch.equal(torch.addmm(bias.to("zynq"), zx, w.to("zynq")).cpu(), data_w + bias)
        assert "weight_quantizations" not in engine.stats()["counters"]
        for b in (param, frozen_view):
            for _ in range(2):
                assert torch.equal((zx @ b).cpu(), weight_w)
        assert engine.stats()["counters"]["weight_quantizations"] == 2
    assert rel_err(data_kt, q @ k.transpose(-2, -1)) < TOL["default"]


def test_concurrent_threads_get_correct_results():
    torch.manual_seed(10)
    mats = [(torch.randn(50, 70), torch.randn(70, 30)) for _ in range(8)]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            a, b = mats[i]
            for _ in range(3):
                results[i] = (a.to("zynq") @ b.to("zynq")).cpu()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for i, (a, b) in enumerate(mats):
        single = (a.to("zynq") @ b.to("zynq")).cpu()
        assert torch.equal(results[i], single)
        assert rel_err(results[i], a @ b) < TOL["default"]


def test_inputs_are_not_mutated():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    za, zb = a.to("zynq"), b.to("zynq")
    _ = torch.addmm(torch.zeros(8, 4).to("zynq"), za, zb)
    assert torch.equal(za.cpu(), a) and torch.equal(zb.cpu(), b)


def test_strict_mode_allows_accelerated_ops_only():
    lin = nn.Linear(16, 4).to("zynq")
    x = torch.randn(3, 16).to("zynq")
    pynqtorch.strict(True)
    try:
        with torch.no_grad():
            lin(x)  # addmm runs on the kernel
            with pytest.raises(pynqtorch.StrictModeError, match="aten::relu"):
                torch.relu(x)
            with pytest.raises(pynqtorch.StrictModeError, match="aten::mm"):
                torch.randn(2, 2, dtype=torch.complex64).to("zynq") @ torch.randn(2, 2, dtype=torch.complex64).to("zynq")
    finally:
        pynqtorch.strict(False)


def test_backward_through_accelerated_linear():
    torch.manual_seed(11)
    lin = nn.Linear(8, 3)
    x = torch.randn(5, 8)
    lin(x).pow(2).sum().backward()
    want = lin.weight.grad.clone()
    lin.zero_grad()
    zl = lin.to("zynq")
    zl(x.to("zynq")).pow(2).sum().backward()
    assert zl.weight.grad.device.type == "zynq"
    assert rel_err(zl.weight.grad.cpu(), want) < 0.05


def test_kernel_from_any_folder_runs_on_csim(tmp_path):
    """A kernel folder outside the search path is compiled from that folder and used by the engine."""
    import json
    import shutil

    from pynqtorch.hw.kernels import find_kernel
    from pynqtorch.targets import registry

    folder = tmp_path / "my_gemm"
    shutil.copytree(find_kernel("gemm_i8_dsp").folder, folder)
    desc = json.loads((folder / "description.json").read_text())
    desc["name"] = "my_gemm_dsp"
    (folder / "description.json").write_text(json.dumps(desc))
    a = torch.randint(-60, 60, (30, 300), dtype=torch.int32)
    b = torch.randint(-60, 60, (300, 20), dtype=torch.int32)
    pynqtorch.use(target="csim", kernel=folder)
    try:
        got = (a.to("zynq") @ b.to("zynq")).cpu()
        assert engine.stats()["kernel"] == "my_gemm_dsp" and engine.stats()["target"] == "csim"
    finally:
        registry.reset()
    assert torch.equal(got, a @ b)


@pytest.mark.parametrize("target_name", ["ref", "csim"])
def test_linear_bias_added_by_the_engine_equals_the_separate_addition(target_name: str, fresh_target: None) -> None:
    """A linear layer's bias is added by the engine (in the native pass of a small product on `ref`): bit for bit
    the product followed by torch's addition, for small and large products, few and many columns, NaN rows and
    weights; counted as one accelerated addmm."""
    from pynqtorch.targets import registry

    if (reason := registry.unavailable_reason(target_name)) is not None:
        pytest.skip(f"{target_name} unavailable: {reason}")
    registry.use(target_name)
    g = torch.Generator().manual_seed(5)
    for m, k, n in ((32, 84, 10), (4, 64, 96), (256, 128, 130), (3, 16, 16)):
        x, w, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n, generator=g)
        x[1, 2] = float("nan") if m == 3 else x[1, 2]
        xz, wz, bz = x.to("zynq"), w.to("zynq"), b.to("zynq")
        pynqtorch.reset_report()
        got = nn.functional.linear(xz, wz, bz)
        assert accelerated_calls("aten::addmm") == 1 and not {"aten::addmm", "aten::add.Tensor", "aten::add_.Tensor"} \
            & set(pynqtorch.report().cpu)
        got = got.cpu()
        want = nn.functional.linear(xz, wz).cpu().add_(b)
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num()), (m, k, n)


def test_engine_gemm_takes_a_bias_of_the_products_columns() -> None:
    a, b = torch.randn(3, 8), torch.randn(8, 5)
    bias = torch.randn(5)
    assert torch.equal(engine.gemm(a, b, bias=bias), engine.gemm(a, b).add_(bias))
    for bad in (torch.randn(3, 5), torch.randn(4), bias.double()):
        with pytest.raises(ValueError, match=r"bias \[N\] of its dtype"):
            engine.gemm(a, b, bias=bad)
    with pytest.raises(ValueError, match="bias="):
        engine.gemm(a[None], b[None], bias=bias)
