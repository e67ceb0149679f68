"""Convolution lowered to im2col + GEMM on the kernel, against torch on CPU."""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch
import torch.nn.functional as F

import pynqtorch
from pynqtorch.ops.conv import conv2d_as_gemm
from pynqtorch.targets import registry

CSIM_REASON = registry.unavailable_reason("csim")

# (in_ch, out_ch, kernel, stride, padding, dilation, groups, bias)
CONV2D = [
    (c_in, c_out, k, s, p, d, g, bias)
    for (c_in, c_out, g), k, s, p, d, bias in itertools.product(
        [(3, 8, 1), (4, 8, 2), (6, 6, 6)],  # plain, grouped, depthwise
        [1, 3, (3, 5)], [1, 2], [0, 1, "same", "valid"], [1, 2], [True, False])
    if not (p == "same" and s != 1)
][::4]
CONV1D = [(3, 5, 4, 2, 3, 2, 1, True), (4, 4, 3, 1, "same", 1, 4, False), (2, 6, 1, 1, 0, 1, 2, True),
          (5, 7, 5, 3, "valid", 1, 1, False)]


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm()).item()


def test_sweep_size():
    assert len(CONV2D) + len(CONV1D) >= 40


@pytest.mark.parametrize("cfg", CONV2D, ids=str)
def test_conv2d_matches_cpu(cfg):
    c_in, c_out, k, s, p, d, g, bias = cfg
    torch.manual_seed(zlib.crc32(repr(cfg).encode()))  # str hash() differs per process
    conv = torch.nn.Conv2d(c_in, c_out, k, stride=s, padding=p, dilation=d, groups=g, bias=bias).eval()
    x = torch.randn(2, c_in, 11, 10)
    with torch.no_grad():
        want = conv(x)
        pynqtorch.reset_report()
        z = conv.to("zynq")(x.to("zynq"))
        got = z.cpu()
    assert got.shape == want.shape and z.stride() == want.stride()
    assert rel_err(got, want) < 0.02
    assert pynqtorch.report().accelerated["aten::convolution_overrideable"].calls == 1


@pytest.mark.parametrize("cfg", CONV1D, ids=str)
def test_conv1d_matches_cpu(cfg):
    c_in, c_out, k, s, p, d, g, bias = cfg
    torch.manual_seed(1)
    conv = torch.nn.Conv1d(c_in, c_out, k, stride=s, padding=p, dilation=d, groups=g, bias=bias).eval()
    x = torch.randn(3, c_in, 23)
    with torch.no_grad():
        want = conv(x)
        z = conv.to("zynq")(x.to("zynq"))
        got = z.cpu()
    assert z.stride() == want.stride()
    assert rel_err(got, want) < 0.02


@pytest.mark.parametrize("groups", [1, 2, 8])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_conv_output_layout_is_cpus_and_flattens_with_view(groups, fmt):
    """Contiguous in, contiguous out; channels-last in, channels-last out; ``view(n, -1)`` as LeNet does."""
    torch.manual_seed(4)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=groups).eval()
    x = torch.randn(3, 8, 7, 7).contiguous(memory_format=fmt)
    with torch.no_grad():
        want = conv(x)
        z = conv.to("zynq")(x.to("zynq"))
    assert z.stride() == want.stride() and z.is_contiguous(memory_format=fmt)
    if fmt == torch.contiguous_format:
        assert rel_err(z.view(3, -1).cpu(), want.view(3, -1)) < 0.02


@pytest.mark.parametrize("shape", [(2, 3, 3, 4, 3), (1, 3, 3, 1, 3), (2, 1, 5, 3, 5), (1, 4, 1, 4, 1), (2, 4, 2, 1, 1)],
                         ids=str)
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_conv_output_strides_of_size_one_dims_are_cpus(shape, fmt):
    """1×1 outputs, one output channel, one image: the strides of size-1 dims are CPU's too."""
    n, c, hw, o, k = shape
    g = torch.Generator().manual_seed(9)
    x = torch.randn(n, c, hw, hw, generator=g).contiguous(memory_format=fmt)
    w, b = torch.randn(o, c, k, k, generator=g), torch.randn(o, generator=g)
    with torch.no_grad():
        want = F.conv2d(x, w, b)
        z = F.conv2d(x.to("zynq"), w.to("zynq"), b.to("zynq"))
    assert z.stride() == want.stride()
    assert rel_err(z.cpu(), want) < 0.05  # as few as one output element: int8 errors do not average out


def test_im2col_gemm_is_exact_equivalent_of_conv_in_float64():
    """The lowering itself (without quantization) equals torch's convolution."""
    torch.manual_seed(2)
    x, w, b = torch.randn(2, 4, 9, 8, dtype=torch.float64), torch.randn(6, 2, 3, 2, dtype=torch.float64), None
    for stride, pad, dil in [((1, 1), (0, 0), (1, 1)), ((2, 1), (1, 2), (1, 2)), ((1, 3), (2, 0), (2, 1))]:
        got = conv2d_as_gemm(x, w, None, b, stride, pad, dil, groups=2, matmul=lambda a, bb: a @ bb)
        torch.testing.assert_close(got, F.conv2d(x, w, b, stride, pad, dil, groups=2))


def test_transposed_and_3d_convolutions_fall_back_and_are_counted():
    torch.manual_seed(3)
    tconv = torch.nn.ConvTranspose2d(3, 4, 3, stride=2)
    x = torch.randn(1, 3, 5, 5)
    c3 = torch.nn.Conv3d(2, 3, 2)
    x3 = torch.randn(1, 2, 4, 4, 4)
    with torch.no_grad():
        want_t, want_3 = tconv(x), c3(x3)
        pynqtorch.reset_report()
        got_t = tconv.to("zynq")(x.to("zynq")).cpu()
        got_3 = c3.to("zynq")(x3.to("zynq")).cpu()
    torch.testing.assert_close(got_t, want_t)
    torch.testing.assert_close(got_3, want_3)
    rep = pynqtorch.report()
    assert rep.cpu["aten::convolution"].calls == 2 and "aten::convolution_overrideable" not in rep.accelerated


def test_conv_backward_runs():
    torch.manual_seed(4)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(2, 2, 6, 6)
    conv(x).sum().backward()
    want = conv.weight.grad.clone()
    conv.zero_grad()
    zc = conv.to("zynq")
    zx = x.to("zynq").requires_grad_()
    zc(zx).sum().backward()
    torch.testing.assert_close(zc.weight.grad.cpu(), want, rtol=1e-4, atol=1e-4)
    assert zx.grad.shape == x.shape


def test_conv_channel_mismatch_is_a_clear_error():
    conv = torch.nn.Conv2d(3, 4, 3).to("zynq")
    with pytest.raises(RuntimeError, match="expected input.*to have 3 channels"):
        conv(torch.randn(1, 5, 8, 8).to("zynq"))


def test_reordered_weight_cache_is_per_view_and_sees_writes():
    """Conv weights are reordered copies: cached per source view of the storage, re-quantized after writes."""
    from pynqtorch import engine

    torch.manual_seed(4)
    big = torch.randn(2, 8, 3, 3, 3)  # two weights of the same shape in one storage
    x = torch.randn(2, 3, 6, 6)
    zbig, zx = big.to("zynq"), x.to("zynq")
    with torch.no_grad():
        for _ in range(2):
            for i in range(2):
                got = F.conv2d(zx, zbig[i], padding=1).cpu()
                assert rel_err(got, F.conv2d(x, big[i], padding=1)) < 0.02
        engine.reset_stats()
        F.conv2d(zx, zbig[0], padding=1)
        assert engine.stats()["counters"].get("weight_cache_hits") == 1
        zbig[0].mul_(-1)
        got = F.conv2d(zx, zbig[0], padding=1).cpu()
    assert rel_err(got, F.conv2d(x, -big[0], padding=1)) < 0.02


def test_derived_operand_made_once_per_view_and_write_generation():
    """A B operand copied out of a zynq view (the reordered conv weight) is made once and remade after a write."""
    from pynqtorch.ops.engine_bridge import gemm_derived

    made = []

    def make(t: torch.Tensor):
        return lambda: made.append(t) or t.cpu().t() * 2

    eye = torch.eye(4)
    z = torch.arange(12.0).reshape(3, 4).to("zynq")
    first = gemm_derived(eye, z, "k", make(z))
    assert torch.allclose(gemm_derived(eye, z, "k", make(z)), first) and len(made) == 1
    torch.testing.assert_close(first, torch.arange(12.0).reshape(3, 4).t() * 2, rtol=0.02, atol=0.1)
    gemm_derived(eye, z[1:], "k", make(z[1:]))  # another view of the storage: its own copy
    gemm_derived(eye, z, "other", make(z))  # another derivation of the same view
    assert len(made) == 3
    z[0, 0] = 100.0
    again = gemm_derived(eye, z, "k", make(z))
    assert len(made) == 4 and abs(again[0, 0].item() - 200.0) < 2
    gemm_derived(eye, None, "k", make(z))  # no zynq owner: made every call
    gemm_derived(eye, None, "k", make(z))
    assert len(made) == 6


@pytest.mark.parametrize("groups", [96, 12])
def test_grouped_conv_shares_kernel_calls_and_stays_exact(groups):
    """Hardware-shaped calls: the groups' products go to the kernel as diagonal blocks of shared calls (far
    fewer calls than groups, no more tiles); the golden model takes all groups in one invocation. Both give
    the same result bit for bit."""
    torch.manual_seed(5)
    conv = torch.nn.Conv2d(96, 96, 3, padding=1, groups=groups).eval().to("zynq")
    x = torch.randn(2, 96, 9, 9).to("zynq")
    outs, calls = {}, {}
    try:
        for name, large in (("stack", True), ("hw", False)):
            registry.use("ref", large_calls=large)
            pynqtorch.reset_report()
            with torch.no_grad():
                outs[name] = conv(x).cpu()
            calls[name] = pynqtorch.report().engine["counters"]["kernel_calls"]
    finally:
        registry.reset()
    assert torch.equal(outs["stack"], outs["hw"])
    assert calls["stack"] == 1 and calls["hw"] <= groups // 2


def _conv_on(target: dict, conv: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """`conv(x)` on zynq with `registry.use(**target)` active, and the engine's counters."""
    from pynqtorch import engine

    try:
        registry.use(**target)
        engine.reset_stats()
        with torch.no_grad():
            out = conv(x)
        return out, engine.stats()["counters"]
    finally:
        registry.reset()


# (in_ch, out_ch, kernel, stride, padding, dilation, bias, channels_last, batch, (H, W)): groups = in_ch
DEPTHWISE = [
    (16, 16, 3, 1, 1, 1, False, False, 2, (20, 19)),
    (16, 16, 3, 2, 0, 1, True, False, 1, (21, 33)),
    (24, 24, 7, 1, 3, 1, True, True, 2, (9, 9)),
    (8, 16, (3, 5), (2, 1), (2, 1), (1, 2), True, True, 3, (11, 10)),
    (12, 12, 3, 1, 1, 1, False, False, 3, (3, 4)),
    (1, 6, 5, 1, 2, 1, True, False, 2, (12, 12)),
    (6, 6, 3, 1, "same", 2, True, True, 2, (7, 8)),
]


@pytest.mark.parametrize("cfg", DEPTHWISE, ids=str)
def test_depthwise_conv_is_one_native_pass_equal_to_the_general_path(cfg):
    """On exact units (ref in large-call mode) a depthwise convolution is one host pass, accounted as one call; it
    equals, bit for bit and stride for stride, the im2col path that hardware-shaped calls take."""
    c_in, c_out, k, s, p, d, bias, channels_last, n, hw = cfg
    torch.manual_seed(zlib.crc32(repr(cfg).encode()))
    conv = torch.nn.Conv2d(c_in, c_out, k, stride=s, padding=p, dilation=d, groups=c_in, bias=bias).eval()
    x = torch.randn(n, c_in, *hw)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = conv(x)
    zc, zx = conv.to("zynq"), x.to("zynq")
    fused, counters = _conv_on({"target": "ref"}, zc, zx)
    general, general_counters = _conv_on({"target": "ref", "large_calls": False}, zc, zx)
    assert counters.get("host_gemms") == 1 and counters["kernel_calls"] == 1
    assert "host_gemms" not in general_counters
    assert fused.stride() == general.stride() == want.stride()
    assert torch.equal(fused.cpu(), general.cpu())
    assert rel_err(fused.cpu(), want) < 0.02


def test_depthwise_conv_with_nonfinite_inputs_or_other_schemes_takes_the_general_path():
    """NaN/Inf windows: the pass declines, the general path puts non-finite results where CPU does. Per-tensor
    activations are not the pass's scheme: the general path, unchanged."""
    from pynqtorch import engine

    torch.manual_seed(6)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8).eval()
    x = torch.randn(2, 8, 9, 9)
    x[1, 2, 4, 4] = float("nan")
    x[0, 5, 0, 0] = float("inf")
    with torch.no_grad():
        want = conv(x)
    zc, zx = conv.to("zynq"), x.to("zynq")
    got, counters = _conv_on({"target": "ref"}, zc, zx)
    general, _ = _conv_on({"target": "ref", "large_calls": False}, zc, zx)
    assert "host_gemms" not in counters and counters["nonfinite_patches"] == 1
    torch.testing.assert_close(got.cpu(), general.cpu(), rtol=0, atol=0, equal_nan=True)
    assert torch.equal(got.cpu().isnan(), want.isnan()) and torch.equal(got.cpu().isinf(), want.isinf())
    x[1, 2, 4, 4] = x[0, 5, 0, 0] = 0.5
    with engine.quant_config(engine.QuantConfig(activations="per_tensor")):
        per_tensor, counters = _conv_on({"target": "ref"}, zc, x.to("zynq"))
    assert "host_gemms" not in counters
    assert rel_err(per_tensor.cpu(), conv.cpu()(x)) < 0.02


@pytest.mark.skipif(CSIM_REASON is not None, reason=str(CSIM_REASON))
def test_depthwise_conv_equals_the_kernels_cpp():
    """The native pass on ref equals the kernel's HLS C++ (csim) bit for bit: 7x7 channels-last with bias, 3x3 stride 2."""
    torch.manual_seed(7)
    for conv, x in ((torch.nn.Conv2d(16, 16, 7, padding=3, groups=16), torch.randn(2, 16, 8, 8).contiguous(
            memory_format=torch.channels_last)), (torch.nn.Conv2d(8, 8, 3, stride=2, groups=8, bias=False),
                                                  torch.randn(2, 8, 19, 21))):
        zc, zx = conv.eval().to("zynq"), x.to("zynq")
        ref, counters = _conv_on({"target": "ref"}, zc, zx)
        csim, _ = _conv_on({"target": "csim"}, zc, zx)
        assert counters.get("host_gemms") == 1
        assert torch.equal(ref.cpu(), csim.cpu()) and ref.stride() == csim.stride()


def _general_conv(conv: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)` on zynq through the engine's general entry (`engine.gemm` with the convolution's `Patches`), the
    weight copied to a fresh zynq tensor so that no plan or cached copy is shared."""
    zw = conv.weight.detach().cpu().to("zynq")
    zb = None if conv.bias is None else conv.bias.detach().cpu().to("zynq")
    from pynqtorch.ops._common import to_cpu

    return conv2d_as_gemm(to_cpu(x), to_cpu(zw), None, to_cpu(zb), conv.stride, conv.padding, conv.dilation,
                          conv.groups)


def test_convolution_plan_is_made_again_after_writes_and_for_other_inputs():
    """A one-group convolution keeps what it decided with its reordered weight (`engine.ConvPlan`): repeat calls equal
    the general path bit for bit and stride for stride, for other input sizes and layouts too; an in-place write
    of the weight (or of the storage through another view) makes the copy, its quantization and the plan again."""
    from pynqtorch import engine
    from pynqtorch.ops.engine_bridge import _derived_owner

    torch.manual_seed(8)
    conv = torch.nn.Conv2d(16, 24, 3, padding=1).eval().to("zynq")
    with torch.no_grad():
        for shape, fmt in (((2, 16, 8, 8), torch.contiguous_format), ((3, 16, 5, 7), torch.contiguous_format),
                           ((2, 16, 8, 8), torch.channels_last), ((1, 16, 1, 1), torch.contiguous_format)):
            x = torch.randn(shape).contiguous(memory_format=fmt).to("zynq")
            for _ in range(2):
                got, want = conv(x), _general_conv(conv, x)
                assert got.stride() == want.stride() and torch.equal(got.cpu(), want)
        copy = _derived_owner(conv.weight).copies[("conv2d", 1)]
        plan = copy.plan
        assert plan is not None and plan.direct
        conv.weight.mul_(-0.5)  # in place through the device: a new write generation
        x = torch.randn(2, 16, 8, 8).to("zynq")
        engine.reset_stats()
        got = conv(x)
        assert engine.stats()["counters"]["weight_quantizations"] == 1
        assert torch.equal(got.cpu(), _general_conv(conv, x))
        fresh = _derived_owner(conv.weight).copies[("conv2d", 1)]
        assert fresh is not copy and fresh.plan is not plan
        conv.weight.view(-1)[:5] = 3.0  # a write through another view of the storage
        assert torch.equal(conv(x).cpu(), _general_conv(conv, x))


def test_convolution_plan_follows_the_quantization_config_and_the_target():
    """A changed quantization config or active target makes a new plan: results equal a fresh weight's under that
    config, and the units of the active target count the calls."""
    from pynqtorch import engine

    torch.manual_seed(9)
    conv = torch.nn.Conv2d(8, 32, 1).eval().to("zynq")
    x = torch.randn(4, 8, 6, 6).to("zynq")
    with torch.no_grad():
        default = conv(x).cpu()
        with engine.quant_config(engine.QuantConfig(weights="per_tensor", activations="per_tensor")):
            per_tensor = conv(x).cpu()
            assert torch.equal(conv(x).cpu(), per_tensor)
            assert torch.equal(per_tensor, _general_conv(conv, x))
        assert not torch.equal(per_tensor, default)
        assert torch.equal(conv(x).cpu(), default)
        try:
            registry.use("ref", units=3)
            engine.reset_stats()
            for _ in range(3):
                assert torch.equal(conv(x).cpu(), default)
            assert {name: u["calls"] for name, u in engine.stats()["units"].items()} == {"ref0": 1, "ref1": 1,
                                                                                         "ref2": 1}
            if CSIM_REASON is None:  # the kernel's C++: the same bits, computed by its units
                registry.use("csim")
                engine.reset_stats()
                assert torch.equal(conv(x).cpu(), default)
                assert all(name.startswith("csim") for name in engine.stats()["units"])
        finally:
            registry.reset()


def test_convolution_counts_what_the_general_path_counts():
    """Repeat calls of a planned convolution record the statistics a call of `engine.gemm` records: one float GEMM,
    one limb product, one kernel call, one weight-cache hit; its first call one quantization. With non-finite inputs
    the native pass declines and the general path runs (counted once)."""
    from pynqtorch import engine

    torch.manual_seed(10)
    conv = torch.nn.Conv2d(8, 16, 3).eval().to("zynq")
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        engine.reset_stats()
        for _ in range(3):
            conv(x.to("zynq"))
        assert engine.stats()["counters"] == {"gemm_float": 3, "limb_products": 3, "kernel_calls": 3,
                                              "weight_quantizations": 1, "weight_cache_hits": 2}
        x[1, 3, 2, 2] = float("nan")
        engine.reset_stats()
        got = conv(x.to("zynq")).cpu()
        counters = engine.stats()["counters"]
        want = conv.cpu()(x)
    assert counters["weight_cache_hits"] == 1 and counters["nonfinite_patches"] == 1
    assert counters["gemm_float"] == 1 and "weight_quantizations" not in counters
    assert torch.equal(got.isnan(), want.isnan())


def test_conv_with_a_cpu_weight_or_bias_is_a_device_error():
    """The kernel views the zynq weight only when it copies it; a CPU weight or bias is still PyTorch's device error."""
    x = torch.randn(1, 3, 5, 5).to("zynq")
    for w, b in ((torch.randn(4, 3, 3, 3), None), (torch.randn(4, 3, 3, 3).to("zynq"), torch.randn(4))):
        with pytest.raises(RuntimeError, match="same device"):
            F.conv2d(x, w, b)
