"""`torch.zynq`: the backend module PyTorch calls for device queries, memory statistics and RNG."""

from __future__ import annotations

import os

import torch
from typing_extensions import Self

from .allocator import get_allocator

_current = 0


def is_available() -> bool:
    """True: the zynq device always exists (its compute runs on the active target)."""
    return True


def is_initialized() -> bool:
    return True


def _is_in_bad_fork() -> bool:
    return False


def device_count() -> int:
    """One device per board named in PYNQ_REMOTE_DEVICES (comma-separated), otherwise one."""
    boards = [b for b in os.environ.get("PYNQ_REMOTE_DEVICES", "").split(",") if b.strip()]
    return max(1, len(boards))


def current_device() -> int:
    return _current


def _index(device: torch.device | str | int | None) -> int:
    if device is None:
        return _current
    if isinstance(device, int):
        idx = device
    else:
        device = torch.device(device)
        if device.type != "zynq":
            raise ValueError(f"expected a zynq device, got {device}")
        idx = _current if device.index is None else device.index
    if not 0 <= idx < device_count():
        raise RuntimeError(f"zynq device {idx} does not exist: {device_count()} zynq device(s) present")
    return idx


def set_device(device: torch.device | str | int) -> None:
    """Select the current zynq device."""
    global _current
    _current = _index(device)


def synchronize(device: torch.device | str | int | None = None) -> None:
    """Wait for all kernel calls on `device`: engine calls are synchronous, so this only validates it."""
    _index(device)


def memory_allocated(device: torch.device | str | int | None = None) -> int:
    """Bytes of host memory held by live zynq storages."""
    _index(device)
    return get_allocator().allocated


def max_memory_allocated(device: torch.device | str | int | None = None) -> int:
    """Peak of `memory_allocated` since start or the last `reset_peak_memory_stats`."""
    _index(device)
    return get_allocator().peak


def reset_peak_memory_stats(device: torch.device | str | int | None = None) -> None:
    _index(device)
    get_allocator().reset_peak()


def memory_stats(device: torch.device | str | int | None = None) -> dict[str, int]:
    _index(device)
    a = get_allocator()
    return {"allocated_bytes.all.current": a.allocated, "allocated_bytes.all.peak": a.peak,
            "allocation.all.current": a.count}


# Random numbers on zynq tensors are drawn on CPU (through the fallback) from the CPU generator, so
# seeding "the accelerator" seeds that generator and results match CPU for the same seed.
def manual_seed(seed: int) -> None:
    torch.default_generator.manual_seed(seed)


manual_seed_all = manual_seed


def seed() -> None:
    torch.default_generator.seed()


seed_all = seed


def initial_seed() -> int:
    return torch.initial_seed()


def get_rng_state(device: torch.device | str | int | None = None) -> torch.Tensor:
    return torch.get_rng_state()


def set_rng_state(new_state: torch.Tensor, device: torch.device | str | int | None = None) -> None:
    torch.set_rng_state(new_state)


def get_amp_supported_dtype() -> list[torch.dtype]:
    return [torch.float16, torch.bfloat16]


def empty_cache() -> None:
    """Release cached memory: a no-op, since host buffers are freed with their tensors and nothing is cached."""


def memory_reserved(device: torch.device | str | int | None = None) -> int:
    """Bytes reserved for zynq storages: the allocated bytes (no cache holds more)."""
    return memory_allocated(device)


def max_memory_reserved(device: torch.device | str | int | None = None) -> int:
    return max_memory_allocated(device)


def mem_get_info(device: torch.device | str | int | None = None) -> tuple[int, int]:
    """(free, total) bytes of the host memory zynq tensors live in."""
    _index(device)
    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page


# Streams and events: engine calls are synchronous, so a stream orders nothing beyond program order and an
# event holds the host time it was recorded (`elapsed_time` in milliseconds). They are PyTorch's generic
# `torch.Stream`/`torch.Event` on zynq, served by the native device guard (`native.cpp`).
class Stream(torch.Stream):
    """A zynq stream (`torch.Stream` on the zynq device)."""

    def __new__(cls, device: torch.device | str | int | None = None, priority: int = 0) -> Self:
        return super().__new__(cls, device=torch.device("zynq", _index(device)), priority=priority)


def Event(enable_timing: bool = False, blocking: bool = False, interprocess: bool = False) -> torch.Event:
    """A zynq event (`torch.Event` on the zynq device; PyTorch accepts no subclass in `elapsed_time`)."""
    return torch.Event(device="zynq", enable_timing=enable_timing, blocking=blocking, interprocess=interprocess)


def current_stream(device: torch.device | str | int | None = None) -> torch.Stream:
    return torch.accelerator.current_stream(torch.device("zynq", _index(device)))


def set_stream(stream: torch.Stream) -> None:
    torch.accelerator.set_stream(stream)


class stream:  # the name device modules use (`torch.cuda.stream`)
    """Context manager selecting `stream` as the current zynq stream (None: no change)."""

    def __init__(self, stream: torch.Stream | None) -> None:
        self.stream = stream
        self.previous: torch.Stream | None = None

    def __enter__(self) -> torch.Stream | None:
        if self.stream is not None:
            self.previous = current_stream(self.stream.device_index)
            set_stream(self.stream)
        return self.stream

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            set_stream(self.previous)
