"""The `csim` target (`target.CsimTarget`): the kernel's HLS C++ built with g++ (`build`: toolchain,
signature check, cache) behind a generated C ABI shim (`shim`), loaded by `library`, and checked against
the golden model (`verify`); map/rows kernels run through `blocks` and are checked against torch
(`verify_blocks`)."""

from .build import CsimError
from .library import CsimLibrary
from .target import CsimTarget, CsimUnit

__all__ = ["CsimError", "CsimLibrary", "CsimTarget", "CsimUnit"]
