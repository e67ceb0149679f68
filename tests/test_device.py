"""The `zynq` device: torch.zynq module, tensors, factories, copies, modules, serialization, dtypes, errors."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import pynqtorch  # noqa: F401  (registers the zynq device)
from pynqtorch.device.storage import host_buffer

ZYNQ = torch.device("zynq", 0)

ALL_DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16,
              torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128]


def sample(dtype: torch.dtype, shape: tuple[int, ...] = (3, 5)) -> torch.Tensor:
    """Values spanning the dtype's range (extremes included), reproducible."""
    g = torch.Generator().manual_seed(0)
    if dtype is torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_complex:
        return torch.randn(shape, dtype=dtype, generator=g) * 1e3
    if dtype.is_floating_point:
        x = (torch.randn(shape, generator=g, dtype=torch.float64) * 1e3).to(dtype)
        x.view(-1)[0] = torch.finfo(dtype).max
        x.view(-1)[1] = torch.finfo(dtype).tiny
        return x
    info = torch.iinfo(dtype)
    x = torch.randint(info.min, info.max, shape, generator=g, dtype=torch.int64).to(dtype)
    x.view(-1)[0], x.view(-1)[1] = info.min, info.max
    return x


# ---- torch.zynq module -----------------------------------------------------------------------------------

def test_backend_module_queries() -> None:
    assert torch.zynq.is_available() is True
    assert torch.zynq.device_count() == 1
    assert torch.zynq.current_device() == 0
    torch.zynq.set_device(0)
    torch.zynq.set_device("zynq:0")
    torch.zynq.synchronize()
    torch.zynq.synchronize(ZYNQ)
    assert torch.device("zynq") == torch.device("zynq")
    assert str(torch.device("zynq", 0)) == "zynq:0"


def test_backend_module_rejects_missing_device() -> None:
    with pytest.raises(RuntimeError, match="zynq device 5 does not exist: 1 zynq device"):
        torch.zynq.set_device(5)
    with pytest.raises(RuntimeError, match="does not exist"):
        torch.zynq.synchronize("zynq:1")
    with pytest.raises(ValueError, match="expected a zynq device, got cpu"):
        torch.zynq.memory_allocated("cpu")


def test_device_count_follows_remote_boards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNQ_REMOTE_DEVICES", "10.0.0.2,10.0.0.3")
    assert torch.zynq.device_count() == 2
    torch.zynq.synchronize(1)


def test_memory_statistics_track_live_tensors() -> None:
    torch.zynq.reset_peak_memory_stats()
    before = torch.zynq.memory_allocated()
    assert torch.zynq.max_memory_allocated() == before
    t = torch.empty(1000, dtype=torch.float32, device="zynq")
    assert torch.zynq.memory_allocated() == before + 4000
    assert torch.zynq.memory_stats()["allocated_bytes.all.current"] == before + 4000
    del t
    assert torch.zynq.memory_allocated() == before
    assert torch.zynq.max_memory_allocated() == before + 4000
    torch.zynq.reset_peak_memory_stats()
    assert torch.zynq.max_memory_allocated() == before


def test_rng_seeding_matches_cpu() -> None:
    torch.zynq.manual_seed(1234)
    a = torch.randn(6, device="zynq").cpu()
    state = torch.zynq.get_rng_state()
    b = torch.rand(4, device="zynq").cpu()
    torch.zynq.set_rng_state(state)
    assert torch.equal(torch.rand(4, device="zynq").cpu(), b)
    torch.manual_seed(1234)
    assert torch.equal(torch.randn(6), a)
    torch.zynq.manual_seed_all(7)
    assert torch.zynq.initial_seed() == 7


def test_generated_tensor_methods() -> None:
    x = torch.arange(4.0)
    z = x.zynq()
    assert z.is_zynq and not x.is_zynq
    assert z.device == ZYNQ
    assert torch.equal(z.cpu(), x)


# ---- tensors and factories --------------------------------------------------------------------------------

def test_to_cpu_and_print() -> None:
    x = torch.tensor([[1.5, -2.0], [3.25, 4.0]])
    z = x.to("zynq")
    assert z.device.type == "zynq" and z.dtype == x.dtype and z.shape == x.shape
    assert torch.equal(z.cpu(), x)
    assert torch.equal(z.to(torch.device("cpu")), x)
    text = repr(z)
    assert "device='zynq:0'" in text and "3.2500" in text


@pytest.mark.parametrize("factory, args, kwargs", [
    (torch.zeros, ((2, 3),), {}),
    (torch.ones, ((2, 3),), {"dtype": torch.int32}),
    (torch.full, ((2, 2), 7.5), {}),
    (torch.arange, (2, 11, 3), {}),
    (torch.arange, (0.0, 1.0, 0.25), {}),
    (torch.eye, (3, 4), {}),
    (torch.linspace, (0, 1, 5), {}),
    (torch.tensor, ([[1, 2], [3, 4]],), {}),
    (torch.tensor, (3.5,), {}),
])
def test_deterministic_factories(factory, args, kwargs) -> None:
    z = factory(*args, device="zynq", **kwargs)
    ref = factory(*args, **kwargs)
    assert z.device == ZYNQ
    assert z.dtype == ref.dtype
    assert torch.equal(z.cpu(), ref)


@pytest.mark.parametrize("factory", [torch.rand, torch.randn])
def test_random_factories_follow_the_cpu_generator(factory) -> None:
    torch.manual_seed(3)
    z = factory(4, 5, device="zynq")
    torch.manual_seed(3)
    assert z.device == ZYNQ and torch.equal(z.cpu(), factory(4, 5))


def test_empty_and_like_factories() -> None:
    e = torch.empty(2, 3, device="zynq", dtype=torch.float64)
    assert e.shape == (2, 3) and e.dtype == torch.float64 and e.device == ZYNQ
    cl = torch.empty(2, 3, 4, 5, device="zynq", memory_format=torch.channels_last)
    assert cl.stride() == torch.empty(2, 3, 4, 5, memory_format=torch.channels_last).stride()
    z = torch.arange(6.0).reshape(2, 3).to("zynq")
    for fn, expect in ((torch.zeros_like, torch.zeros(2, 3)), (torch.ones_like, torch.ones(2, 3)),
                       (lambda t: torch.full_like(t, 2.0), torch.full((2, 3), 2.0))):
        out = fn(z)
        assert out.device == ZYNQ and torch.equal(out.cpu(), expect)
    assert torch.empty_like(z).shape == (2, 3)
    torch.manual_seed(0)
    r = torch.rand_like(z)
    torch.manual_seed(0)
    assert torch.equal(r.cpu(), torch.rand(2, 3))
    assert torch.randn_like(z).device == ZYNQ
    assert z.new_zeros(4).device == ZYNQ and z.new_tensor([1.0]).device == ZYNQ


def test_zynq_device_index_out_of_range_is_clear() -> None:
    with pytest.raises(RuntimeError, match="zynq:5 does not exist: 1 zynq device"):
        torch.ones(2).to("zynq:5")
    with pytest.raises(RuntimeError, match="zynq:5 does not exist"):
        torch.zeros(2, device="zynq:5")


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_every_dtype_round_trips_exactly(dtype: torch.dtype) -> None:
    x = sample(dtype)
    z = x.to("zynq")
    assert z.dtype == dtype
    back = z.cpu()
    assert back.dtype == dtype
    assert torch.equal(back.view(-1).view(torch.uint8), x.view(-1).view(torch.uint8))
    assert torch.equal(z.clone().cpu().view(-1).view(torch.uint8), x.view(-1).view(torch.uint8))
    nc = x.t().to("zynq")
    assert torch.equal(nc.cpu(), x.t())


def test_clone_is_independent() -> None:
    z = torch.arange(5.0).to("zynq")
    c = z.clone()
    c.add_(1)
    assert torch.equal(z.cpu(), torch.arange(5.0))
    assert torch.equal(c.cpu(), torch.arange(5.0) + 1)
    assert host_buffer(c).data_ptr() != host_buffer(z).data_ptr()


def test_copy_both_directions_with_dtype_conversion_and_strides() -> None:
    x = torch.randn(4, 6)
    z = torch.zeros(4, 6, dtype=torch.float64, device="zynq")
    z.copy_(x)
    assert torch.equal(z.cpu(), x.double())
    zt = torch.zeros(6, 4, device="zynq")
    zt.copy_(x.t())
    assert torch.equal(zt.cpu(), x.t())
    dst = torch.zeros(6, 4, dtype=torch.float16)
    dst.copy_(z.t())
    assert torch.equal(dst, x.t().half())
    zz = torch.zeros(3, 6, device="zynq")
    zz[:, ::2].copy_(z[:3, ::2])
    expect = torch.zeros(3, 6)
    expect[:, ::2] = x[:3, ::2]
    assert torch.equal(zz.cpu(), expect)
    zint = torch.zeros(4, 6, dtype=torch.int32, device="zynq")
    zint.copy_(z)
    assert torch.equal(zint.cpu(), x.double().to(torch.int32))
    with pytest.raises(RuntimeError):
        torch.zeros(2, device="zynq").copy_(torch.zeros(3))


def test_to_with_dtype_and_device_together() -> None:
    x = torch.randn(3, 3)
    z = x.to("zynq", torch.float16)
    assert z.dtype == torch.float16 and torch.equal(z.cpu(), x.half())
    assert torch.equal(z.to(torch.float64).cpu(), x.half().double())
    assert z.to("zynq") is z


# ---- modules, state_dict, serialization ------------------------------------------------------------------

def _net() -> torch.nn.Module:
    """BatchNorm (with running stats) ahead of the GEMM-family layers, which run quantized on the engine."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.BatchNorm2d(2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                               torch.nn.Conv2d(2, 3, 2), torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 2, 4))


# The GEMM-family layers run int8-quantized on the active target: their outputs match CPU within this.
QUANT_TOL = {"atol": 0.05, "rtol": 0.05}


def test_module_to_moves_parameters_and_buffers() -> None:
    net = _net()
    ref = copy.deepcopy(net)
    moved = net.to("zynq")
    assert moved is net
    for p in net.parameters():
        assert isinstance(p, torch.nn.Parameter) and p.device == ZYNQ and p.requires_grad
    for b in net.buffers():
        assert b.device == ZYNQ
    for (name, a), (_, b) in zip(net.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a.cpu(), b), name
    x = torch.randn(5, 2, 6, 6)
    net.train()
    ref.train()
    with torch.no_grad():
        out, ref_out = net(x.to("zynq")), ref(x)
    assert out.device == ZYNQ
    torch.testing.assert_close(out.cpu(), ref_out, **QUANT_TOL)
    bn, ref_bn = net[0], ref[0]
    assert torch.equal(bn.running_mean.cpu(), ref_bn.running_mean)
    assert torch.equal(bn.running_var.cpu(), ref_bn.running_var)
    assert bn.num_batches_tracked.device == ZYNQ and bn.num_batches_tracked.cpu().item() == 1
    net.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x.to("zynq")).cpu(), ref(x), **QUANT_TOL)
    back = net.to("cpu")
    assert all(t.device.type == "cpu" for t in back.state_dict().values())


def test_state_dict_and_load_state_dict() -> None:
    net = _net().to("zynq")
    sd = net.state_dict()
    assert all(v.device == ZYNQ for v in sd.values())
    cpu_net = _net()
    for p in cpu_net.parameters():
        p.data.mul_(0)
    cpu_net.load_state_dict(sd)
    for (k, v), (k2, v2) in zip(sd.items(), cpu_net.state_dict().items()):
        assert k == k2 and torch.equal(v.cpu(), v2)
    fresh = _net().to("zynq")
    fresh.load_state_dict({k: v.cpu() * 0 for k, v in sd.items()})
    assert all(torch.equal(v.cpu(), torch.zeros_like(v.cpu())) for v in fresh.state_dict().values())


@pytest.mark.parametrize("map_location, device", [(None, "zynq"), ("zynq", "zynq"), ("cpu", "cpu"),
                                                   (torch.device("cpu"), "cpu")])
def test_save_load_round_trip(map_location, device: str) -> None:
    x = torch.randn(4, 5)
    z = x.to("zynq")
    payload = {"t": z, "view": z[1:, 2:], "int": torch.arange(5, dtype=torch.int16).to("zynq"),
               "state": _net().to("zynq").state_dict()}
    buf = io.BytesIO()
    torch.save(payload, buf)
    buf.seek(0)
    loaded = torch.load(buf, map_location=map_location)
    assert loaded["t"].device.type == device
    assert torch.equal(loaded["t"].cpu(), x)
    assert torch.equal(loaded["view"].cpu(), x[1:, 2:])
    assert loaded["int"].dtype == torch.int16 and torch.equal(loaded["int"].cpu(), torch.arange(5, dtype=torch.int16))
    net = _net()
    net.load_state_dict(loaded["state"])
    # the view still shares memory with its base after loading, as on CPU
    loaded["t"][1, 2] = 100.0
    assert loaded["view"][0, 0].item() == 100.0


def test_save_cpu_tensor_load_onto_zynq() -> None:
    buf = io.BytesIO()
    torch.save(torch.arange(6.0), buf)
    buf.seek(0)
    t = torch.load(buf, map_location="zynq")
    assert t.device == ZYNQ and torch.equal(t.cpu(), torch.arange(6.0))


def test_load_onto_missing_zynq_device_is_clear() -> None:
    buf = io.BytesIO()
    torch.save(torch.arange(3.0), buf)
    buf.seek(0)
    with pytest.raises(RuntimeError, match="cannot load a tensor onto zynq:3"):
        torch.load(buf, map_location="zynq:3")


def test_deepcopy_keeps_device_values_and_sharing() -> None:
    z = torch.arange(6.0).to("zynq")
    net = _net().to("zynq")
    d = copy.deepcopy({"z": z, "v": z[2:], "net": net})
    assert d["z"].device == ZYNQ and torch.equal(d["z"].cpu(), torch.arange(6.0))
    assert d["v"].untyped_storage().data_ptr() == d["z"].untyped_storage().data_ptr()
    assert d["z"].untyped_storage().data_ptr() != z.untyped_storage().data_ptr()
    d["z"][0] = 9
    assert z[0].item() == 0
    for a, b in zip(net.state_dict().values(), d["net"].state_dict().values()):
        assert b.device == ZYNQ and torch.equal(a.cpu(), b.cpu())


# ---- device rules ----------------------------------------------------------------------------------------

def test_mixing_with_cpu_tensor_names_both_devices() -> None:
    z = torch.ones(3, device="zynq")
    with pytest.raises(RuntimeError, match=r"zynq:0 and cpu"):
        z + torch.ones(3)
    with pytest.raises(RuntimeError, match=r"zynq:0 and cpu"):
        torch.ones(3) * z
    with pytest.raises(RuntimeError, match=r"zynq:0 and cpu"):
        torch.cat([z, torch.ones(3)])


def test_indexing_follows_pytorchs_device_rule() -> None:
    """`dev_tensor[{cpu,dev}_index]` works; a CPU tensor indexed (or written) through zynq indices raises, as
    with CUDA indices (PyTorch's `check_indices_on_cpu_or_selfdevice`)."""
    x = torch.arange(10.0)
    z = x.to("zynq")
    i = torch.tensor([1, 4, 4])
    assert torch.equal(z[i].cpu(), x[i]) and torch.equal(z[i.to("zynq")].cpu(), x[i])
    rule = r"indices should be either on cpu or on the same device as the indexed tensor \(cpu\)"
    with pytest.raises(RuntimeError, match=rule):
        x[i.to("zynq")]
    with pytest.raises(RuntimeError, match=rule):
        x[i.to("zynq")] = 1.0
    with pytest.raises(RuntimeError, match=rule):
        x.index_put_((i.to("zynq"),), torch.tensor(2.0), accumulate=True)
    assert torch.equal(x, torch.arange(10.0))


def test_mode_out_runs_on_zynq() -> None:
    """`mode(..., out=)` is a composite accepting listed device types only: zynq runs it on CPU views."""
    t = torch.tensor([[1, 2, 2, 3], [4, 4, 0, 0]])
    values = torch.empty(0, dtype=torch.long, device="zynq")
    indices = torch.empty(0, dtype=torch.long, device="zynq")
    got = torch.mode(t.to("zynq"), 1, out=(values, indices))
    want = torch.mode(t, 1)
    assert got[0] is values and got[1] is indices
    assert torch.equal(values.cpu(), want.values) and torch.equal(indices.cpu(), want.indices)


def test_scalar_cpu_tensors_and_python_numbers_mix_freely() -> None:
    z = torch.arange(4.0).to("zynq")
    assert torch.equal((z + torch.tensor(2.0)).cpu(), torch.arange(4.0) + 2)
    assert torch.equal((torch.tensor(3) * z).cpu(), torch.arange(4.0) * 3)
    assert torch.equal((z * 2 + 1).cpu(), torch.arange(4.0) * 2 + 1)
    assert torch.equal(torch.where(z > 1, z, 0.5).cpu(), torch.where(torch.arange(4.0) > 1, torch.arange(4.0), 0.5))
    assert (z.sum() + torch.tensor(1.0)).device == ZYNQ
    assert (2 ** z).device == ZYNQ and torch.equal((2 ** z).cpu(), 2 ** torch.arange(4.0))


def test_item_and_python_conversions() -> None:
    z = torch.tensor([1.5, 2.5]).to("zynq")
    assert z.sum().item() == 4.0
    assert z.tolist() == [1.5, 2.5]
    assert float(z[0]) == 1.5 and int(z[1]) == 2 and bool(z[0] > 1)
    assert z.numpy(force=True).tolist() == [1.5, 2.5]


def test_conj_and_neg_bits_resolve_correctly() -> None:
    c = torch.randn(5, dtype=torch.complex64)
    z = c.to("zynq")
    zc = z.conj()
    assert zc.is_conj()
    assert torch.equal(zc.cpu(), c.conj())
    assert torch.equal(zc.resolve_conj().cpu(), c.conj())
    assert torch.equal(zc.clone().cpu(), c.conj())
    assert torch.equal((zc * 2).cpu(), c.conj() * 2)
    assert torch.equal(z.conj().imag.cpu(), c.conj().imag)
    n = torch._neg_view(z)
    assert n.is_neg() and torch.equal(n.cpu(), -c)
    target = torch.zeros(5, dtype=torch.complex64, device="zynq")
    target.copy_(zc)
    assert torch.equal(target.cpu(), c.conj())


@pytest.mark.parametrize("fn", [torch.fft.fft, torch.fft.ifft, torch.fft.rfft, torch.fft.fft2,
                                lambda x: torch.fft.irfft(torch.fft.rfft(x))], ids=["fft", "ifft", "rfft", "fft2", "irfft"])
def test_fft_ops(fn) -> None:
    x = torch.randn(4, 8)
    torch.testing.assert_close(fn(x.to("zynq")).cpu(), fn(x))
