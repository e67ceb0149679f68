"""The device's C++ runtime (``native.cpp``): hooks PyTorch asks of C++ only, and the native CPU fallback.

* Hooks: pinned memory, streams/events, accelerator memory statistics (a Python backend cannot provide a
  pinned-memory allocator or a device allocator).
* Allocation: ``empty.memory_format`` / ``empty_strided`` (`FACTORIES`) in C++, with CPU memory accounted as
  adopted memory, switched with the native fallback (the Python kernels use the Python host allocator).
* The native CPU fallback: C++ kernels doing what `fallback.run_on_cpu` does (CPU views in, zynq results
  out, counted) for the ops `fallback.native_candidates` selects, at ~1/5 of the Python path's cost. They
  sit on a `torch::Library` of their own over the Python kernels and are dropped (the Python path serves)
  while strict mode or ``PYNQTORCH_DEBUG`` is on or another host allocator is installed. Their op counters
  and adopted memory are merged into `pynqtorch.report()` and the allocator's statistics.

The library is compiled against the installed torch on the first import into the build cache
(`pynqtorch.buildcache`, under a minute, once per torch and compiler) and registered before the Python
fallbacks. Without a compiler, or with ``PYNQTORCH_NATIVE=0``, the pure-Python hooks and fallback serve and
the hook APIs raise PyTorch's own errors (logged once).
"""

from __future__ import annotations

import ctypes
import importlib.resources
import logging
import os
import subprocess
from pathlib import Path

import torch
import torch.utils.cpp_extension as cpp

from ..buildcache import BuildError, cached_build
from . import allocator, fallback, report, storage
from .allocator import get_allocator

log = logging.getLogger(__name__)

ENV = "PYNQTORCH_NATIVE"
_STATS = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(ctypes.c_int64))
_lib: ctypes.CDLL | None = None
# zynq allocations made in C++ (kernels of their own in native.cpp), switched with the native fallback
FACTORIES = ("empty.memory_format", "empty_strided")
_candidates: list[str] = []  # ops the native fallback may take (`fallback.native_candidates`)
_ids: dict[str, int] = {}  # op -> index of its native counters (stable for the process)
_registered: list[str] = []  # ops the native fallback runs now
_on = [True]  # the switch of `fallback_enabled`
_own: dict[str, bool] = {}  # ops with zynq kernels of the ops layer -> whether that kernel must serve now


@_STATS
def _stats(op: int, out: ctypes.Array) -> None:
    if op == 2:
        from .module import device_count

        out[0] = device_count()
        return
    a = get_allocator()
    if op == 0:
        out[0], out[1], out[2] = a.allocated, a.peak, a.count
    else:
        a.reset_peak()


def build() -> Path:
    """Path of the compiled library for the running torch (built on first use)."""
    src = Path(str(importlib.resources.files(__package__) / "native.cpp"))
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    flags = ["-O2", "-std=c++20", "-fPIC", "-shared", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
             *(f"-I{p}" for p in cpp.include_paths()[:1])]
    libdir = cpp.library_paths()[0]
    link = [f"-L{libdir}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{libdir}"]

    def compile_(tmp: Path, cxx: str) -> None:
        proc = subprocess.run([cxx, *flags, "-o", str(tmp / "native.so"), str(src), *link], capture_output=True,
                              text=True, check=False)
        if proc.returncode:
            raise RuntimeError(f"compiling {src} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")

    key = [src.read_bytes(), " ".join(flags + link).encode(), torch.__version__.encode()]
    return cached_build("native", "native", key, compile_) / "native.so"


def install(device_count: int) -> bool:
    """Build, load and register the hooks; False (logged) when they cannot serve."""
    global _lib
    if os.environ.get(ENV, "1") == "0":
        return False
    try:
        lib = ctypes.CDLL(str(build()))
    except (BuildError, RuntimeError, OSError) as e:
        log.warning("zynq native runtime unavailable (no pinned memory, streams, torch.accelerator memory "
                    "statistics or native CPU fallback): %s", e)
        return False
    lib.pynqtorch_install.argtypes = [ctypes.c_int, _STATS]
    lib.pynqtorch_install.restype = ctypes.c_int
    lib.pynqtorch_fallback_enable.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_int),
                                              ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_char_p,
                                              ctypes.c_int]
    lib.pynqtorch_fallback_enable.restype = ctypes.c_int
    lib.pynqtorch_fallback_disable.restype = None
    lib.pynqtorch_fallback_counters.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int64),
                                                ctypes.POINTER(ctypes.c_double), ctypes.c_int]
    lib.pynqtorch_fallback_counters.restype = None
    lib.pynqtorch_memory.argtypes = [ctypes.c_int64, ctypes.c_int, ctypes.POINTER(ctypes.c_int64)]
    lib.pynqtorch_memory.restype = None
    if not lib.pynqtorch_install(device_count, _stats):
        return False
    _lib = lib
    return True


class _NativeMemory:
    """The memory the native fallback adopted, as `allocator.ExternalMemory` of the default allocator."""

    def stats(self, own_delta: int = 0, reset_peak: bool = False) -> tuple[int, int, int]:
        out = (ctypes.c_int64 * 3)()
        _lib.pynqtorch_memory(own_delta, int(reset_peak), out)
        return out[0], out[1], out[2]


def install_fallback(candidates: list[str]) -> None:
    """Offer `candidates` to the native fallback, hook its counters and memory into the report and the default
    allocator, and switch it on if nothing requires the Python path (`sync`)."""
    if _lib is None:
        return
    _candidates[:] = [*candidates, *FACTORIES]
    for name in _candidates:
        _ids.setdefault(name, len(_ids))
    report.add_source(counters)
    memory = _NativeMemory()
    memory.stats(allocator.DEFAULT._allocated)  # its bytes so far; later changes are reported as they happen
    allocator.DEFAULT.external = memory
    fallback.watch(sync)
    allocator.watch(sync)
    sync()


def sync() -> None:
    """Register the native fallback when it may serve, drop it when strict mode, debug logging or another host
    allocator needs every call to pass through `fallback.run_on_cpu`."""
    if _lib is None:
        return
    want: list[str] = []
    if _on[0] and not fallback.checked() and get_allocator() is allocator.DEFAULT:
        want = sorted((set(_candidates) | {n for n, serve in _own.items() if not serve})
                      - {n for n, serve in _own.items() if serve})
    for name in want:
        _ids.setdefault(name, len(_ids))
    if want == _registered:
        return
    storage.native_adopt(None)
    if not want:
        _lib.pynqtorch_fallback_disable()
        _registered.clear()
        return
    names = (ctypes.c_char_p * len(want))(*(n.encode() for n in want))
    ids = (ctypes.c_int * len(want))(*(_ids[n] for n in want))
    views = (ctypes.c_int * len(want))(*(n in fallback.METADATA_VIEWS for n in want))
    error = ctypes.create_string_buffer(2000)
    if _lib.pynqtorch_fallback_enable(names, ids, views, len(want), error, len(error)) != len(want):
        log.warning("zynq native CPU fallback unavailable, the Python one serves: %s", error.value.decode())
        _registered.clear()
        return
    _registered[:] = want
    # The ops layer's results are wrapped as the native fallback wraps its own (same memory accounting).
    storage.native_adopt(torch.ops.pynqtorch_host.adopt_result.default)


def fallback_enabled(enabled: bool | None = None) -> bool:
    """Get, or set, whether the native CPU fallback may serve (False: every fallback call runs in Python, as
    with ``PYNQTORCH_NATIVE=0``); returns whether it serves now."""
    if enabled is not None:
        _on[0] = bool(enabled)
        sync()
    return bool(_registered)


def own_kernels(kernels: dict[str, bool]) -> None:
    """Declare ops (``gelu``) with zynq kernels of their own registered by the ops layer, each with whether it
    must serve now (True) or only runs the CPU fallback now (False: a map/rows op not selected for offload),
    which the native fallback then runs in its place."""
    _own.update({name: serve for name, serve in kernels.items() if serve or fallback.native_eligible(name)})
    sync()


def registered() -> list[str]:
    """The ops (``add.Tensor``) whose CPU fallback runs natively now."""
    return list(_registered)


def counters(reset: bool = False) -> dict[str, tuple[int, float]]:
    """Calls and seconds of every op the native fallback ran since the last reset (by aten name,
    ``aten::add.Tensor``); `reset` zeroes them afterwards (`pynqtorch.reset_report()` does)."""
    n = len(_ids)
    if _lib is None or not n:
        return {}
    calls, seconds = (ctypes.c_int64 * n)(), (ctypes.c_double * n)()
    _lib.pynqtorch_fallback_counters(n, calls, seconds, int(reset))
    return {f"aten::{name}": (calls[i], seconds[i]) for name, i in _ids.items() if calls[i]}
