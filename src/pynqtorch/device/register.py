"""Registering the `zynq` device with PyTorch (once per process, on `import pynqtorch`)."""

from __future__ import annotations

import sys
import types

import torch
from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

from . import fallback, kernels, module, native, rnn, serialization

_libs: list[torch.library.Library] = []


# The pure-Python hooks and guard serve only when the native ones (`native.py`) cannot be built.
class _Hooks(torch._C._acc.PrivateUse1Hooks):
    def is_available(self) -> bool:
        return True

    def has_primary_context(self, device_index: int) -> bool:
        return True

    def is_built(self) -> bool:
        return True


class _Guard(torch._C._acc.DeviceGuard):
    def type_(self):
        return torch._C._autograd.DeviceType.PrivateUse1


def _module_getattr(name: str) -> type:
    """Inductor asks the device module for its codegen classes: zynq's refuse, naming the backend that works."""
    from .compiler import CODEGEN_BASES, refusing_codegen

    if name in CODEGEN_BASES:
        return refusing_codegen(name)
    raise AttributeError(f"module 'torch.zynq' has no attribute {name!r}")


def _backend_module() -> types.ModuleType:
    mod = types.ModuleType("torch.zynq", "The zynq device: device queries, memory statistics, RNG, streams.")
    for name in dir(module):
        obj = getattr(module, name)
        if callable(obj) and not name.startswith("__") and getattr(obj, "__module__", "") == module.__name__:
            setattr(mod, name, obj)
    mod.__getattr__ = _module_getattr  # type: ignore[method-assign]
    return mod


def register() -> None:
    """Rename PrivateUse1 to `zynq` and install the backend module, kernels and the CPU fallback. Idempotent."""
    if _libs:
        return
    current = torch._C._get_privateuse1_backend_name()
    if current not in ("privateuseone", "zynq"):
        raise RuntimeError(f"PrivateUse1 is already taken by backend {current!r}; pynqtorch needs it for 'zynq'")
    if current == "privateuseone":
        native.install(module.device_count())
        mod = _backend_module()
        _setup_privateuseone_for_python_backend("zynq", backend_module=mod, hook=_Hooks(), device_guard=_Guard())
        sys.modules.setdefault("torch.zynq", mod)
    impl = torch.library.Library("aten", "IMPL")
    for name, fn in {**kernels.KERNELS, **rnn.KERNELS}.items():
        impl.impl(name, fn, "PrivateUse1")
    direct = fallback.direct_kernels()
    candidates = fallback.native_candidates(direct)
    for name, fn in direct.items():
        impl.impl(name, fn, "PrivateUse1")
    for key in ("Conjugate", "Negative"):
        for name, fn in kernels.MATH_BIT_KERNELS.items():
            impl.impl(name, fn, key)
    serialization.register_location()
    fb = torch.library.Library("_", "IMPL")
    fb.fallback(fallback._boxed_fallback, "PrivateUse1")
    # `torch.autocast("zynq")` is accepted and changes no dtype: ops run at their inputs' dtypes.
    fb.fallback(torch.library.fallthrough_kernel, "AutocastPrivateUse1")
    _libs.extend([impl, fb])
    native.install_fallback(candidates)  # over the Python kernels, which serve again when it is switched off
