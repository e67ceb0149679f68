"""The native CPU fallback (`device/native.cpp`) against the Python one (`device/fallback.py`): same results
(values, dtype, geometry, aliasing, inference and conj/neg bits, errors), counted in the report and in the
memory statistics, and switched off where every call must pass through Python."""

from __future__ import annotations

import copy
import io
import os
from collections.abc import Callable

import pytest
import torch

import pynqtorch
from pynqtorch.device import native

pytestmark = pytest.mark.skipif(os.environ.get(native.ENV) == "0", reason="PYNQTORCH_NATIVE=0: Python path only")


@pytest.fixture(autouse=True)
def _native_on() -> None:
    assert native.fallback_enabled(), "the native fallback does not serve (no compiler?)"
    yield
    native.fallback_enabled(True)


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, generator=g)
    return {"x": x.to("zynq"), "y": torch.randn(4, 6, generator=g).to("zynq"),
            "i8": torch.randint(-100, 100, (5,), dtype=torch.int8, generator=g).to("zynq"),
            "c": torch.randn(3, 2, dtype=torch.complex64, generator=g).to("zynq"),
            "e": torch.empty(0, 3, device="zynq"), "w": torch.ones(6, device="zynq"),
            "b": torch.zeros(6, device="zynq")}


CASES: dict[str, Callable[[dict[str, torch.Tensor]], object]] = {
    "add": lambda t: t["x"] + t["y"],
    "add_scalar": lambda t: t["x"] + 2.5,
    "wrapped_number_first": lambda t: 2 * t["x"],
    "int8_times_int": lambda t: t["i8"] * 3,
    "int8_true_div": lambda t: t["i8"] / 3,
    "gelu": lambda t: torch.nn.functional.gelu(t["x"]),
    "softmax": lambda t: t["x"].softmax(-1),
    "layer_norm": lambda t: torch.nn.functional.layer_norm(t["x"], (6,), t["w"], t["b"]),
    "transpose_contiguous": lambda t: t["x"].t().contiguous(),
    "cat": lambda t: torch.cat([t["x"], t["y"], t["e"].new_empty(0, 6)]),
    "cat_mixed_dtypes": lambda t: torch.cat([t["x"][:, :5], t["i8"].view(1, 5)]),
    "topk": lambda t: t["x"].topk(2, dim=1),
    "max_dim": lambda t: t["x"].max(dim=0),
    "split_then_add": lambda t: [s + 1 for s in t["x"].split(2)],
    "unbind_then_relu": lambda t: [u.relu() for u in t["x"].unbind(0)],
    "unfold_view": lambda t: t["x"].unfold(1, 2, 2),
    "metadata_view": lambda t: t["x"].view(2, 12),
    "metadata_view_error": lambda t: t["x"].t().view(24),
    "as_strided_transpose": lambda t: t["x"].t(),
    "view_as_real": lambda t: torch.view_as_real(t["c"]),
    "view_as_real_of_conj": lambda t: torch.view_as_real(t["c"].conj()),
    "inference_metadata_view": lambda t: _inference(lambda: t["x"].view(24)),
    "zero_size_sum": lambda t: t["e"].sum(0),
    "zero_size_add": lambda t: t["e"] + 1,
    "item": lambda t: t["x"][1, 2].item(),
    "argmax": lambda t: t["x"].argmax(),
    "where": lambda t: torch.where(t["x"] > 0, t["x"], t["y"]),
    "where_scalar_abs": lambda t: torch.where(t["i8"] > 0, t["i8"], 1.5).abs(),
    "conj_times": lambda t: t["c"].conj() * 2,
    "conj_sum": lambda t: t["c"].conj().sum(0),
    "neg_view": lambda t: torch._neg_view(t["x"]) + 1,
    "conj_unfold_view": lambda t: t["c"].conj().unfold(0, 2, 1),
    "inference_add": lambda t: _inference(lambda: t["x"] + t["y"]),
    "inference_view_of_normal": lambda t: _inference(lambda: t["x"].unfold(1, 3, 3)),
    "dropout_seeded": lambda t: _seeded(lambda: torch.nn.functional.dropout(t["x"], 0.5, training=True)),
    "backward": lambda t: _grad(t["x"]),
    "device_mismatch": lambda t: t["x"] + torch.ones(4, 6),
    "zero_dim_cpu_ok": lambda t: t["x"] * torch.tensor(2.0),
    "sparse_layout": lambda t: t["x"].to_sparse(),
    "factories": lambda t: [torch.ones(2, 3, device="zynq"), torch.zeros(4, dtype=torch.int16, device="zynq"),
                            torch.full((2,), 7.5, device="zynq"), torch.arange(5, device="zynq"),
                            torch.arange(1.0, 4.0, 0.5, device="zynq"), torch.scalar_tensor(3, device="zynq"),
                            t["x"].new_ones(3), t["x"].new_full((2, 2), -1), t["i8"].new_zeros(2)],
    "factory_device_error": lambda t: torch.ones(2, device="zynq:9"),
    "likes": lambda t: [torch.zeros_like(t["x"].t()), torch.ones_like(t["i8"]), torch.full_like(t["c"], 2j)],
    "constant_pad": lambda t: [torch.nn.functional.pad(t["x"], (1, 2, 0, 1), value=-3.0),
                               torch.nn.functional.pad(t["x"].t(), (0, 1))],
    "nested_result": lambda t: torch._nested_tensor_from_mask(t["x"].reshape(2, 2, 6),
                                                             torch.ones(2, 2, dtype=torch.bool).to("zynq")),
}


def _inference(fn: Callable[[], object]) -> object:
    with torch.inference_mode():
        return fn()


def _seeded(fn: Callable[[], object]) -> object:
    torch.manual_seed(1)
    return fn()


def _grad(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_()
    torch.nn.functional.gelu(x.softmax(-1) * 3).sum().backward()
    return x.grad


def _run(case: Callable, inputs: dict[str, torch.Tensor]) -> object:
    try:
        return case(inputs)
    except Exception as e:  # noqa: BLE001 - errors are compared between the two paths
        return e


def _describe(out: object, inputs: dict[str, torch.Tensor]) -> object:
    """Everything observable about a result: values, dtype, geometry, bits, and what it aliases."""
    if isinstance(out, Exception):
        return type(out), str(out)
    if isinstance(out, (list, tuple)):
        return type(out).__name__, [_describe(o, inputs) for o in out]
    if not isinstance(out, torch.Tensor):
        return out
    ptrs = {k: v.untyped_storage().data_ptr() for k, v in inputs.items()}
    return {"device": str(out.device), "dtype": out.dtype, "shape": tuple(out.shape), "stride": out.stride(),
            "offset": out.storage_offset(), "conj": out.is_conj(), "neg": out.is_neg(),
            "inference": out.is_inference(), "values": out.cpu().resolve_conj().resolve_neg().tolist(),
            "is_input": [k for k, v in inputs.items() if v is out],
            "aliases": [k for k, p in ptrs.items() if p and out.untyped_storage().data_ptr() == p]}


@pytest.mark.parametrize("name", sorted(CASES))
def test_native_and_python_paths_agree(name: str) -> None:
    pynqtorch.reset_report()
    native_out = _run(CASES[name], ins := _inputs())
    calls = sum(c for c, _ in native.counters().values())
    native_out = _describe(native_out, ins)
    native.fallback_enabled(False)
    python_out = _describe(_run(CASES[name], ins := _inputs()), ins)
    assert native_out == python_out
    if not (isinstance(native_out, tuple) and isinstance(native_out[0], type)):  # failed calls are not counted
        assert calls > 0, "the native fallback ran nothing"


def test_errors_name_the_op_as_python_does() -> None:
    x = torch.ones(3, device="zynq")
    with pytest.raises(RuntimeError, match=r"^Expected all tensors to be on the same device, but found at least "
                       r"two devices, zynq:0 and cpu! \(in aten::add\.Tensor\)$"):
        x + torch.ones(3)
    with pytest.raises(RuntimeError, match=r"aten::_to_sparse\.sparse_dim made a torch\.sparse_coo tensor: zynq "
                       "tensors are dense"):
        x.to_sparse(1)


def test_native_ops_are_counted_in_the_report_and_reset_with_it() -> None:
    x = torch.ones(8, device="zynq")
    pynqtorch.reset_report()
    for _ in range(3):
        x = x + 1
    assert "add.Tensor" in native.registered()
    assert native.counters()["aten::add.Tensor"][0] == 3
    cpu = pynqtorch.report().cpu["aten::add.Tensor"]
    assert cpu.calls == 3 and cpu.seconds > 0
    pynqtorch.reset_report()
    assert "aten::add.Tensor" not in pynqtorch.report().cpu and not native.counters()


def test_profiler_names_native_fallback_ops() -> None:
    x = torch.ones(8, device="zynq")
    with torch.profiler.profile() as prof:
        x.exp()
    assert "zynq::cpu_fallback::aten::exp" in {e.name for e in prof.events()}


def test_fresh_results_are_adopted_and_accounted_until_freed() -> None:
    x = torch.ones(1000, device="zynq")
    before = (torch.zynq.memory_allocated(), torch.accelerator.memory_allocated())
    y = x * 2
    assert native.counters()["aten::mul.Tensor"][0] >= 1
    assert torch.zynq.memory_allocated() == before[0] + 4000
    assert torch.accelerator.memory_allocated() == before[1] + 4000
    assert torch.zynq.max_memory_allocated() >= before[0] + 4000
    del y
    assert torch.zynq.memory_allocated() == before[0]
    torch.zynq.reset_peak_memory_stats()
    assert torch.zynq.max_memory_allocated() == torch.zynq.memory_allocated()


def test_storages_made_natively_work_from_python() -> None:
    """Host buffer, CPU views, deepcopy, save/load, set_ and in-place writes on a result made in C++."""
    y = torch.arange(6.0, device="zynq") + 1
    assert pynqtorch.device.storage.host_buffer(y).data_ptr() == y.data_ptr()
    d = copy.deepcopy(y)
    assert d.untyped_storage().data_ptr() != y.untyped_storage().data_ptr()
    assert torch.equal(d.cpu(), torch.arange(6.0) + 1)
    buf = io.BytesIO()
    torch.save({"y": y, "v": y[2:]}, buf)
    buf.seek(0)
    back = torch.load(buf)
    assert back["y"].device.type == "zynq" and torch.equal(back["v"].cpu(), torch.arange(2.0, 6.0) + 1)
    s = torch.empty(0, device="zynq").set_(y.untyped_storage(), 1, (2,), (2,))
    s.mul_(10)
    assert torch.equal(y.cpu(), torch.tensor([1.0, 20.0, 3.0, 40.0, 5.0, 6.0]))


@pytest.mark.parametrize("mode", ["strict", "allocator", "switch"])
def test_python_path_serves_where_every_call_must_pass_through_it(mode: str) -> None:
    if mode == "strict":
        pynqtorch.strict(True)
    elif mode == "allocator":
        previous = pynqtorch.device.set_allocator(pynqtorch.device.HostAllocator())
    else:
        native.fallback_enabled(False)
    try:
        assert not native.registered()
        pynqtorch.reset_report()
        if mode == "strict":
            with pytest.raises(pynqtorch.StrictModeError, match="aten::exp"):
                torch.ones(2, device="zynq").exp()
        else:
            torch.ones(2, device="zynq").exp()
            assert pynqtorch.report().cpu["aten::exp"].calls == 1 and not native.counters()
        count = pynqtorch.device.get_allocator().count
        x = torch.empty(10, device="zynq")  # allocated by the Python host allocator, whichever it is
        assert pynqtorch.device.get_allocator().count == count + 1
        del x
    finally:
        if mode == "strict":
            pynqtorch.strict(False)
        elif mode == "allocator":
            pynqtorch.device.set_allocator(previous)
        else:
            native.fallback_enabled(True)
    assert native.fallback_enabled() and "exp" in native.registered()


def test_offloaded_ops_keep_their_kernels() -> None:
    """A map/rows op selected for offload is its kernel's again; unselected, the native fallback runs it."""
    assert "gelu" in native.registered()
    pynqtorch.use(offload="all")
    try:
        assert "gelu" not in native.registered()
    finally:
        pynqtorch.use(offload="gemm")
    assert "gelu" in native.registered()


def test_two_call_composites_run_as_one_native_call() -> None:
    """`where` and `abs` would be `empty` + their `out=` form in Python, `contiguous` an `empty_strided` +
    `copy_`: natively each is one counted call and no Python fallback call."""
    x = torch.randn(3, 4).to("zynq")
    pynqtorch.reset_report()
    torch.where(x > 0, x, 0.0).abs()
    x.t().contiguous()
    torch.nn.functional.pad(x, (1, 1))
    torch.ones(2, device="zynq") + torch.arange(2, device="zynq")
    cpu = pynqtorch.report().cpu
    assert {"aten::where.self", "aten::abs", "aten::clone", "aten::constant_pad_nd", "aten::ones",
            "aten::arange"} <= set(native.counters())
    assert not {"aten::where.self_out", "aten::abs.out", "aten::_copy_from", "aten::empty.memory_format",
                "aten::fill_.Scalar", "aten::arange.out"} & set(cpu)


@pytest.mark.parametrize(("make", "stride"), [
    (lambda: torch.empty(2, 3, 4, 5, device="zynq"), (60, 20, 5, 1)),
    (lambda: torch.empty(2, 3, 4, 5, device="zynq", memory_format=torch.channels_last), (60, 1, 15, 3)),
    (lambda: torch.empty_strided((2, 3), (1, 2), device="zynq", dtype=torch.int16), (1, 2)),
    (lambda: torch.empty(0, device="zynq:0"), (1,))])
def test_allocations_are_made_natively_and_accounted(make: Callable[[], torch.Tensor], stride: tuple) -> None:
    assert {"empty.memory_format", "empty_strided"} <= set(native.registered())
    count, before = pynqtorch.device.get_allocator()._count, torch.zynq.memory_allocated()
    x = make()
    assert x.device == torch.device("zynq", 0) and x.stride() == stride
    assert pynqtorch.device.get_allocator()._count == count  # not the Python allocator's
    nbytes = x.untyped_storage().nbytes()
    assert torch.zynq.memory_allocated() == before + nbytes
    x.cpu()  # readable, and writable through the device
    x.fill_(3)
    assert (x.cpu() == 3).all()
    del x
    assert torch.zynq.memory_allocated() == before


@pytest.mark.parametrize("boards", ["", "10.0.0.2,10.0.0.3"])
@pytest.mark.parametrize("device", ["zynq:1", "zynq:7"])
def test_allocation_errors_are_the_python_kernels(device: str, boards: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Placing a tensor beyond zynq:0 fails as the Python kernel says (which depends on the boards named now)."""
    monkeypatch.setenv("PYNQ_REMOTE_DEVICES", boards)
    with pytest.raises(RuntimeError) as native_error:
        torch.empty(2, device=device)
    native.fallback_enabled(False)
    with pytest.raises(RuntimeError) as python_error:
        torch.empty(2, device=device)
    with pytest.raises(RuntimeError) as python_strided:
        torch.empty_strided((2,), (1,), device=device)
    native.fallback_enabled(True)
    with pytest.raises(RuntimeError) as native_strided:
        torch.empty_strided((2,), (1,), device=device)
    assert str(native_error.value) == str(python_error.value) == str(python_strided.value) \
        == str(native_strided.value)
    assert ("zynq tensors live on zynq:0" if boards and device == "zynq:1" else "does not exist") \
        in str(native_error.value)


def test_out_arguments_made_natively_grow_as_cpu_tensors_do() -> None:
    """An `out=` tensor made in C++ (a native result, a native `empty`) is resized by the CPU kernel like any
    other: it used to fail with "Trying to resize storage that is not resizable"."""
    y = torch.ones(3, device="zynq") * 2
    with pytest.warns(UserWarning, match="resized"):
        torch.add(torch.ones(5, device="zynq"), 1, out=y)
    assert torch.equal(y.cpu(), torch.full((5,), 2.0))
    assert torch.equal(torch.arange(6.0, device="zynq").cpu(), torch.arange(6.0))  # empty(0), then arange.out
    z = torch.empty(0, device="zynq")
    torch.mul(torch.ones(2, 3, device="zynq"), 3, out=z)
    assert z.shape == (2, 3) and torch.equal(z.cpu(), torch.full((2, 3), 3.0))
    z.add_(1)  # the grown memory is the tensor's from now on
    assert torch.equal(z.cpu(), torch.full((2, 3), 4.0))


@pytest.mark.parametrize("native_on", [True, False])
def test_factories_refuse_devices_beyond_zynq0_on_both_paths(native_on: bool) -> None:
    """A factory with a CPU kernel (`tril_indices`) used to make a tensor on a zynq device that does not exist."""
    native.fallback_enabled(native_on)
    with pytest.raises(RuntimeError, match="zynq:5 does not exist"):
        torch.tril_indices(3, 3, device="zynq:5")
    assert torch.tril_indices(3, 3, device="zynq:0").device == torch.device("zynq", 0)


# Accelerated ops (the ops layer's Python kernels) whose fresh CPU results are wrapped natively while the native
# fallback serves (`storage.adopt_result`).
ACCELERATED: dict[str, Callable[[dict[str, torch.Tensor]], object]] = {
    "linear": lambda t: torch.nn.functional.linear(t["x"], t["x"][:3], t["w"][:3]),
    "mm_transposed": lambda t: t["x"].t() @ t["y"],
    "conv2d": lambda t: torch.nn.functional.conv2d(t["x"].view(1, 2, 3, 4), t["x"][:3, :2].reshape(3, 2, 1, 1)),
    "inference_linear": lambda t: _inference(lambda: torch.nn.functional.linear(t["x"], t["y"])),
    "addmm_out": lambda t: torch.addmm(t["w"][:4], t["x"], t["y"].t(), out=torch.empty(0, device="zynq")),
    "linear_backward": lambda t: _linear_grad(t["x"], t["y"]),
}


def _linear_grad(x: torch.Tensor, w: torch.Tensor) -> list[torch.Tensor]:
    x = x.detach().requires_grad_()
    y = torch.nn.functional.linear(x, w)
    y.sum().backward()
    return [y.detach(), x.grad]


@pytest.mark.parametrize("name", sorted(ACCELERATED))
def test_accelerated_results_are_wrapped_alike_on_both_paths(name: str) -> None:
    """Values (bit for bit), geometry, inference bit and report counts of accelerated ops' results are the same
    whether the native runtime or the Python host allocator wraps them."""
    def run() -> tuple[object, dict, tuple[int, int]]:
        pynqtorch.reset_report()
        pynqtorch.engine.reset_stats()
        out = _describe(_run(ACCELERATED[name], ins := _inputs()), ins)
        rep = pynqtorch.report()
        units = rep.engine["units"].values()  # the units take calls in turn: totals
        return out, {k: v.calls for k, v in rep.accelerated.items()}, (
            sum(s["calls"] for s in units), sum(s["tiles"] for s in units))

    native_run = run()
    native.fallback_enabled(False)
    python_run = run()
    assert native_run == python_run
    assert native_run[1], "no accelerated op ran"


@pytest.mark.parametrize("native_on", [True, False])
def test_adopted_results_resolve_conj_and_neg_bits(native_on: bool) -> None:
    native.fallback_enabled(native_on)
    c = torch.randn(3, dtype=torch.complex64)
    z = pynqtorch.device.storage.adopt_result(c.conj())
    assert z.device.type == "zynq" and not z.is_conj() and torch.equal(z.cpu(), c.conj().resolve_conj())
    r = torch.randn(4)
    z = pynqtorch.device.storage.adopt_result(torch._neg_view(r))
    assert not z.is_neg() and torch.equal(z.cpu(), -r)


def test_accelerated_results_are_adopted_natively_and_accounted_until_freed() -> None:
    """While the native fallback serves, an accelerated op's result is wrapped in C++: its memory is counted with the
    native fallback's (not by the Python allocator), in `torch.zynq.memory_allocated()`, until freed; its storage
    works from Python (CPU views, in-place writes, a following accelerated op)."""
    x, w = torch.randn(16, 32).to("zynq"), torch.randn(24, 32).to("zynq")
    memory = native._NativeMemory()
    count, before, storages = pynqtorch.device.get_allocator()._count, torch.zynq.memory_allocated(), \
        memory.stats()[1]
    y = torch.nn.functional.linear(x, w)
    assert pynqtorch.report().accelerated["aten::mm"].calls >= 1
    assert pynqtorch.device.get_allocator()._count == count and memory.stats()[1] == storages + 1
    assert torch.zynq.memory_allocated() == before + 16 * 24 * 4
    assert torch.zynq.max_memory_allocated() >= before + 16 * 24 * 4
    first = y.cpu()
    y.mul_(2)
    assert torch.equal(y.cpu(), first * 2)
    z = y @ w[:, :24]
    assert torch.equal(z.cpu(), (y.cpu().to("zynq") @ w[:, :24]).cpu())
    del y, z
    assert torch.zynq.memory_allocated() == before and memory.stats()[1] == storages
