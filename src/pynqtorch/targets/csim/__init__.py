"""The `csim` target (`target.CsimTarget`): the kernel's HLS C++ built with g++ (`build`: toolchain,
signature check, cache) behind a generated C ABI shim (`shim`), and checked against the golden model
(`verify`)."""

from .build import CsimError
from .target import CsimLibrary, CsimTarget, CsimUnit

__all__ = ["CsimError", "CsimLibrary", "CsimTarget", "CsimUnit"]
