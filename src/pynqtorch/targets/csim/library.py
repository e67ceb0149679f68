"""One loaded C-simulation build of a kernel (see `csim.build`): its top function called through ctypes with raw
word buffers and scalars in the description's argument order. The csim units and the virtual board use it."""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ...hw.description import Description
from ...hw.kernels import KernelInfo, find_kernel
from ...hw.packing import call_dims, parse_ctype, word_dtype, words_for
from .build import build_library
from .shim import ENTRY


def _private_copy(lib: Path, index: int) -> Path:
    """A per-unit copy of `lib` (dlopen shares one handle per file, so copies get separate globals)."""
    copy = lib.with_name(f"{lib.stem}.unit{index}{lib.suffix}")
    if not copy.is_file():
        fd, tmp = tempfile.mkstemp(dir=lib.parent, prefix=".tmp-", suffix=lib.suffix)
        os.close(fd)
        shutil.copyfile(lib, tmp)
        os.replace(tmp, copy)
    return copy


class CsimLibrary:
    """One loaded C-simulation build of a kernel: ``call(**{arg.name: words_or_int})`` runs its top function.

    Buffers are numpy arrays of the argument's word dtype (`hw.packing.word_dtype`), C-contiguous, at
    least `words_for` words long (the result buffer writable); scalars are ints. Dims are checked against
    the description before the kernel sees them.
    """

    def __init__(self, kernel: KernelInfo | str | os.PathLike, copy: int | None = None) -> None:
        self.info = kernel if isinstance(kernel, KernelInfo) else find_kernel(kernel)
        self.desc: Description = self.info.desc
        built = build_library(self.info)
        self.path = built if copy is None else _private_copy(built, copy)
        self._lib = ctypes.CDLL(str(self.path))
        self._fn = getattr(self._lib, ENTRY)
        argtypes: list[Any] = []
        for arg in self.desc.args:
            ct = parse_ctype(arg.ctype)
            if ct.pointer:
                flags = "C_CONTIGUOUS,WRITEABLE" if arg.role == "c" else "C_CONTIGUOUS"
                argtypes += [np.ctypeslib.ndpointer(dtype=ct.dtype, flags=flags), ctypes.c_size_t]
            else:
                argtypes.append(np.ctypeslib.as_ctypes_type(ct.dtype))
        self._fn.argtypes = argtypes
        self._fn.restype = None

    @property
    def name(self) -> str:
        return self.desc.name

    def call(self, **kwargs: np.ndarray | int) -> None:
        """Run the top function once on raw buffers and scalars named as in the description."""
        names = [a.name for a in self.desc.args]
        if set(kwargs) != set(names):
            missing = sorted(set(names) - set(kwargs))
            extra = sorted(set(kwargs) - set(names))
            raise TypeError(f"kernel {self.name}: call() takes arguments {names}; missing {missing}, "
                            f"unexpected {extra}")
        dims = {d: getattr(self.desc.tile, d) for d in ("m", "n", "k")}
        for arg in self.desc.args:
            if arg.role in dims:
                value = kwargs[arg.name]
                if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                    raise TypeError(f"kernel {self.name}: scalar {arg.name!r} must be an int, "
                                    f"got {type(value).__name__}")
                dims[arg.role] = int(value)
        call_dims(self.desc, **dims)
        values: list[Any] = []
        for arg in self.desc.args:
            value = kwargs[arg.name]
            if arg.role in dims:
                values.append(value)
                continue
            need = words_for(arg, dims["m"], dims["n"], dims["k"])
            if not isinstance(value, np.ndarray):
                raise TypeError(f"kernel {self.name}: buffer {arg.name!r} must be a numpy array, "
                                f"got {type(value).__name__}")
            if value.dtype != word_dtype(arg):
                raise TypeError(f"kernel {self.name}: buffer {arg.name!r} has dtype {value.dtype}, "
                                f"expected {word_dtype(arg)} for C type {arg.ctype!r}")
            if not value.flags.c_contiguous:
                raise TypeError(f"kernel {self.name}: buffer {arg.name!r} is not C-contiguous "
                                "(pass np.ascontiguousarray(...))")
            if arg.role == "c" and not value.flags.writeable:
                raise TypeError(f"kernel {self.name}: result buffer {arg.name!r} is read-only")
            if value.size < need:
                raise ValueError(f"kernel {self.name}: buffer {arg.name!r} has {value.size} words, "
                                 f"needs {need} for m={dims['m']} n={dims['n']} k={dims['k']}")
            values += [value, need]
        self._fn(*values)
