"""The device's C++ runtime hooks (``native.cpp``): pinned memory, streams/events, accelerator memory statistics.

PyTorch asks these of C++ only (a Python backend cannot provide a pinned-memory allocator or a device
allocator). The library is compiled against the installed torch on the first import into the build cache
(`pynqtorch.buildcache`, a few seconds, once per torch and compiler) and registered before the Python
fallbacks. Without a compiler, or with ``PYNQTORCH_NATIVE=0``, the pure-Python hooks serve and those APIs
raise PyTorch's own errors (logged once).
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
from .allocator import get_allocator

log = logging.getLogger(__name__)

ENV = "PYNQTORCH_NATIVE"
_STATS = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(ctypes.c_int64))


@_STATS
def _stats(op: int, out: ctypes.Array) -> None:
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
    if os.environ.get(ENV, "1") == "0":
        return False
    try:
        lib = ctypes.CDLL(str(build()))
    except (BuildError, RuntimeError, OSError) as e:
        log.warning("zynq native hooks unavailable (no pinned memory, streams or torch.accelerator memory "
                    "statistics): %s", e)
        return False
    lib.pynqtorch_install.argtypes = [ctypes.c_int, _STATS]
    lib.pynqtorch_install.restype = ctypes.c_int
    return bool(lib.pynqtorch_install(device_count, _stats))
