"""The `csim` target: kernel calls run the kernel's own HLS C++, compiled with g++ against Xilinx AP types.

`CsimLibrary` loads one compiled kernel (see `csim.build`) and calls its top function with raw word
buffers and scalars in the description's argument order; the virtual board uses it directly. `CsimUnit`
packs int8 tiles with `hw.packing`, calls the library and unpacks the accumulator. ctypes releases the GIL
during the call, and every unit loads its own copy of the library (so even kernels with `static` state
run safely side by side): units of one target run in parallel threads.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ...buildcache import BuildError, compiler
from ...hw.description import Description
from ...hw.kernels import KernelInfo, find_kernel, kernels
from ...hw.packing import call_dims, pack_operand, parse_ctype, unpack_result, word_dtype, words_for
from ..base import ComputeUnit, Target, TargetUnavailable
from .build import ap_types_dir, build_library
from .shim import ENTRY

DEFAULT_UNITS = 2


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


class CsimUnit(ComputeUnit):
    """A compute unit running the kernel's C simulation in this process."""

    def __init__(self, name: str, library: CsimLibrary) -> None:
        super().__init__(name, library.desc)
        self.library = library
        self._a, self._b, self._c = (library.desc.arg(r) for r in ("a", "b", "c"))

    def _run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        (m, k), n = a.shape, b.shape[1]
        if b.shape[0] != k:
            raise ValueError(f"{self.name}: inner dims differ: a is {a.shape}, b is {b.shape}")
        dims = call_dims(self.desc, m, n, k)
        c = np.zeros(words_for(self._c, m, n, k), word_dtype(self._c))
        kwargs: dict[str, Any] = {self._a.name: pack_operand(a, self._a), self._b.name: pack_operand(b, self._b),
                                  self._c.name: c}
        kwargs.update({arg.name: dims[arg.role] for arg in self.desc.args if arg.role in dims})
        self.library.call(**kwargs)
        return unpack_result(c, self._c, m, n)


def _kernel_info(desc: Description) -> KernelInfo:
    info = kernels().get(desc.name)
    if info is None or info.desc != desc:
        raise TargetUnavailable(f"csim: kernel {desc.name!r} is not on the kernel search path with this "
                                "description; add its folder with PYNQTORCH_KERNEL_PATH or add_kernel_path()")
    return info


class CsimTarget(Target):
    """C simulation of the kernel's HLS C++ (bit-exact with `ref`, slower; never picked over it by default)."""

    name = "csim"
    priority = -10

    def __init__(self, units: int | None = None) -> None:
        env = os.environ.get("PYNQTORCH_CSIM_UNITS")
        if units is None and env:
            if not env.isdigit() or int(env) < 1:
                raise ValueError(f"PYNQTORCH_CSIM_UNITS={env!r} is not a positive integer")
            units = int(env)
        self.units = units or DEFAULT_UNITS

    @classmethod
    def probe(cls) -> str | None:
        try:
            compiler()
            ap_types_dir()
        except (BuildError, TargetUnavailable) as e:
            return str(e)
        return None

    def compute_units(self, desc: Description | KernelInfo) -> list[ComputeUnit]:
        info = desc if isinstance(desc, KernelInfo) else _kernel_info(desc)
        return [CsimUnit(f"csim:{info.name}:{i}", CsimLibrary(info, copy=i)) for i in range(self.units)]
