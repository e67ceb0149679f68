"""Device runtime APIs served by the native hooks: pinned memory, streams and events, torch.accelerator memory."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import pynqtorch  # noqa: F401  (registers zynq)
from pynqtorch.device import native


def test_pin_memory_pins_and_is_reported() -> None:
    x = torch.randn(5, 3)
    assert not x.is_pinned()
    p = x.pin_memory()
    assert p.is_pinned() and p[1:].is_pinned()  # a view inside the pinned block is pinned too
    assert torch.equal(p, x) and p.data_ptr() != x.data_ptr()
    assert p.pin_memory() is p


def test_non_blocking_copy_to_cpu_is_exact() -> None:
    x = torch.randn(6, 4)
    z = x.to("zynq")
    out = z.to("cpu", non_blocking=True)
    torch.accelerator.synchronize()
    assert out.device.type == "cpu" and torch.equal(out, x)
    assert torch.equal(z.t().to("cpu", non_blocking=True), x.t())
    assert torch.equal(x.to("zynq", non_blocking=True).cpu(), x)


def test_dataloader_pin_memory() -> None:
    data = torch.arange(24.0).reshape(12, 2)
    labels = torch.arange(12)
    loader = DataLoader(TensorDataset(data, labels), batch_size=4, pin_memory=True)
    batches = list(loader)
    assert len(batches) == 3
    for i, (xb, yb) in enumerate(batches):
        assert xb.is_pinned() and yb.is_pinned()
        assert torch.equal(xb, data[4 * i:4 * i + 4]) and torch.equal(yb, labels[4 * i:4 * i + 4])
        assert torch.equal(xb.to("zynq", non_blocking=True).cpu(), xb)


def test_accelerator_synchronize_and_memory_statistics() -> None:
    assert torch.accelerator.current_accelerator().type == "zynq"
    torch.accelerator.synchronize()
    torch.zynq.synchronize()
    before = torch.accelerator.memory_allocated()
    assert before == torch.zynq.memory_allocated()
    x = torch.empty(1000, dtype=torch.float32, device="zynq")
    assert torch.accelerator.memory_allocated() == before + 4000
    assert torch.accelerator.max_memory_allocated() >= before + 4000
    assert torch.accelerator.memory_reserved() == torch.zynq.memory_reserved() == before + 4000
    stats = torch.accelerator.memory_stats()
    assert stats["allocated_bytes.all.current"] == before + 4000
    del x
    assert torch.accelerator.memory_allocated() == before
    torch.accelerator.reset_peak_memory_stats()
    assert torch.accelerator.max_memory_allocated() == before
    torch.accelerator.reset_accumulated_memory_stats()
    torch.accelerator.empty_cache()
    torch.zynq.empty_cache()
    free, total = torch.accelerator.get_memory_info()
    assert 0 < free <= total
    assert torch.zynq.mem_get_info()[1] == total


def test_bare_zynq_storage_has_memory_while_the_native_fallback_serves() -> None:
    """It gets accounted CPU memory (what `copy.deepcopy` of a storage made in C++ clones into); with the
    native fallback off it is a clear error."""
    assert native.fallback_enabled()
    before = torch.zynq.memory_allocated()
    st = torch.UntypedStorage(8, device="zynq")
    assert torch.zynq.memory_allocated() == before + 8 == torch.accelerator.memory_allocated()
    t = torch.empty(0, device="zynq").set_(st).fill_(2.0)
    assert torch.equal(t.cpu(), torch.full((2,), 2.0))
    del st, t
    assert torch.zynq.memory_allocated() == before
    native.fallback_enabled(False)
    try:
        with pytest.raises(RuntimeError, match="create a zynq tensor"):
            torch.UntypedStorage(4, device="zynq")
    finally:
        native.fallback_enabled(True)


def test_streams() -> None:
    s = torch.zynq.Stream()
    assert isinstance(s, torch.Stream) and s.device.type == "zynq"
    assert s.query() and s.stream_id != torch.zynq.current_stream().stream_id
    generic = torch.Stream(device="zynq")
    assert generic.stream_id not in (0, s.stream_id)
    default = torch.zynq.current_stream()
    with torch.zynq.stream(s):
        assert torch.zynq.current_stream() == s == torch.accelerator.current_stream()
        y = torch.ones(3, 3, device="zynq") @ torch.ones(3, 3, device="zynq")
    assert torch.zynq.current_stream() == default
    with s:
        assert torch.accelerator.current_stream() == s
    s.wait_stream(generic)
    s.synchronize()
    assert torch.equal(y.cpu(), torch.full((3, 3), 3.0))
    assert torch.get_device_module("zynq").Stream is torch.zynq.Stream


def test_events_time_host_work() -> None:
    start, end = torch.zynq.Event(enable_timing=True), torch.Event(device="zynq", enable_timing=True)
    start.record()
    x = torch.randn(64, 64, device="zynq")
    (x @ x).cpu()
    end.record(torch.zynq.current_stream())
    end.synchronize()
    assert start.query() and end.query()
    assert start.elapsed_time(end) > 0
    s = torch.zynq.Stream()
    s.wait_event(s.record_event())
