"""Building a kernel's own HLS C++ with g++ for C simulation: toolchain, signature check, cache.

A kernel folder is compiled into a shared library exporting one C function, ``pynqtorch_csim_call``,
generated from `description.json` by `shim.py`. Libraries are cached under
``$PYNQTORCH_CACHE/csim`` (default ``~/.cache/pynqtorch/csim``) in a folder named by a hash of the
sources, headers, shim, flags, compiler and AP headers; a build happens in a temporary folder renamed into
place atomically, under a file lock, so concurrent processes build once and never see a partial library.
Every fresh library gets its first call in a subprocess: a kernel that crashes raises `KernelCrash` there
instead of killing the caller.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from ...buildcache import atomic_write, cached_build
from ...hw.blocks import elements, max_sizes
from ...hw.description import Description
from ...hw.families import AnyDescription, BlockDescription
from ...hw.kernels import KernelInfo
from ...hw.packing import call_dims, parse_ctype, words_for
from ..base import TargetUnavailable
from .shim import ENTRY, SOURCE_EXT, generate_shim

CXXFLAGS = ("-O2", "-std=c++14")
SHARED_FLAGS = ("-fPIC", "-shared")
_HEADER_EXT = (".h", ".hh", ".hpp", ".hxx", ".inc")
# First call of a fresh library: a bound on the work (MACs) so the check stays quick.
_SMOKE_MACS = 1 << 24
SMOKE_TIMEOUT_S = 300


class CsimError(RuntimeError):
    """A kernel that cannot be built or run in C simulation; the message says which and why."""


class CompileError(CsimError):
    """g++ rejected the kernel; the message holds the compiler's error lines."""


class SignatureError(CsimError):
    """The sources' top function does not match the description (missing, argument count or names)."""


class KernelCrash(CsimError):
    """The compiled kernel crashed (signal) or did not finish on its first call."""


# -- toolchain --------------------------------------------------------------------------------------------

@cache
def ap_types_dir() -> Path:
    """Xilinx AP types headers (``ap_int.h``) shipped in the hls4ml wheel; `TargetUnavailable` when absent."""
    try:
        root = importlib.resources.files("hls4ml")
    except ModuleNotFoundError:
        raise TargetUnavailable("the AP types headers come from hls4ml, which is not installed "
                                "(pip install 'pynqtorch[csim]')") from None
    path = Path(str(root)) / "templates" / "vivado" / "ap_types"
    if not (path / "ap_int.h").is_file():
        raise TargetUnavailable(f"hls4ml is installed but {path / 'ap_int.h'} is missing; "
                                "reinstall it (pip install --force-reinstall 'pynqtorch[csim]')")
    return path


# -- signature check --------------------------------------------------------------------------------------

_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


def _split_params(text: str) -> list[str]:
    params, depth, cur = [], 0, ""
    for ch in text:
        if ch in "<([":
            depth += 1
        elif ch in ">)]":
            depth -= 1
        if ch == "," and depth == 0:
            params.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip() and cur.strip() != "void":
        params.append(cur.strip())
    return params


_TYPE_WORDS = {"const", "volatile", "unsigned", "signed", "char", "short", "int", "long", "float", "double",
               "bool", "void", "struct"}


def _param_name(param: str) -> str | None:
    """The parameter's name, or None when the declaration has none (``int*``, ``unsigned int``)."""
    prev = None
    while prev != param:  # drop template arguments (innermost first) and array bounds
        prev, param = param, re.sub(r"<[^<>]*>|\[[^\]]*\]", " ", param)
    words = re.findall(r"[A-Za-z_]\w*", param.replace("::", " "))
    if len(words) < 2 or words[-1] in _TYPE_WORDS:
        return None
    return words[-1]


def _definitions(text: str, top: str) -> Iterator[list[str]]:
    """Parameter lists of every definition ``top(...) {`` in `text` (comments already removed)."""
    for match in re.finditer(rf"\b{re.escape(top)}\s*\(", text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        rest = text[i:].lstrip()
        before = text[:match.start()].rstrip()
        if rest.startswith("{") and before and (before[-1].isalnum() or before[-1] in "_>*&"):
            yield _split_params(text[match.end():i - 1])


def check_signature(folder: Path, desc: AnyDescription) -> None:
    """Reject, before compiling, sources whose top function is missing or disagrees with the description."""
    found: list[tuple[str, list[str]]] = []
    for rel in desc.sources:
        path = folder / rel
        if not path.is_file():
            raise SignatureError(f"{folder / 'description.json'}: field 'sources': {path} does not exist")
        text = _COMMENTS.sub(" ", path.read_text(errors="replace"))
        found += [(rel, params) for params in _definitions(text, desc.top)]
    if not found:
        raise SignatureError(f"{folder / 'description.json'}: field 'top': no definition of function "
                             f"{desc.top!r} in sources {desc.sources}")
    rel, params = found[0]
    want = [a.name for a in desc.args]
    if len(params) != len(want):
        raise SignatureError(f"{folder / rel}: {desc.top}() takes {len(params)} arguments ({', '.join(params)}) "
                             f"but {folder / 'description.json'} field 'args' lists {len(want)} ({', '.join(want)})")
    for i, (param, arg) in enumerate(zip(params, desc.args)):
        name = _param_name(param)
        if name is not None and name != arg.name:
            raise SignatureError(f"{folder / rel}: argument {i} of {desc.top}() is {name!r} but "
                                 f"{folder / 'description.json'} field 'args[{i}].name' is {arg.name!r}")
        is_ptr = "*" in param or "[" in param
        if is_ptr != parse_ctype(arg.ctype).pointer:
            raise SignatureError(f"{folder / rel}: argument {i} of {desc.top}() is {param!r} but "
                                 f"{folder / 'description.json'} field 'args[{i}].ctype' is {arg.ctype!r}")


# -- build and cache --------------------------------------------------------------------------------------

def _kernel_files(folder: Path, desc: AnyDescription) -> list[Path]:
    """Files whose content decides the library: listed sources plus every header in the kernel folder."""
    files = {folder / s for s in desc.sources}
    files |= {p for p in folder.rglob("*") if p.suffix in _HEADER_EXT and p.is_file()}
    return sorted(files)


def _compile(cmd: list[str], what: str, folder: Path, cwd: Path) -> None:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=cwd)
    if proc.returncode == 0:
        return
    log = (proc.stderr or proc.stdout).splitlines()
    errors = [line for line in log if re.search(r"\berror\b|undefined reference", line)]
    shown = "\n".join((errors or log)[:30])
    raise CompileError(f"{what} of kernel folder {folder} failed (exit {proc.returncode}):\n{shown}\n"
                       f"command: {' '.join(cmd)}")


def _cached_build(info: KernelInfo, kind: str, key_parts: list[bytes], write_sources, cmd_for) -> Path:
    """Build once per key: `write_sources(tmpdir)` then `cmd_for(tmpdir, cxx)`; returns the build folder."""
    def build(tmp: Path, cxx: str) -> None:
        write_sources(tmp)
        _compile(cmd_for(tmp, cxx), f"{kind} build", info.folder, tmp)

    parts = key_parts + [str(ap_types_dir()).encode(), importlib.metadata.version("hls4ml").encode()]
    return cached_build("csim", f"{info.name}-{kind}", parts, build)


def build_library(info: KernelInfo) -> Path:
    """Path of the kernel's C-simulation shared library, compiled if needed and checked by a first call."""
    desc, folder = info.desc, info.folder
    check_signature(folder, desc)
    shim = generate_shim(folder, desc)
    flags = [*CXXFLAGS, *SHARED_FLAGS]
    parts = [shim.encode(), " ".join(flags).encode()]
    parts += [p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes() for p in _kernel_files(folder, desc)]

    def cmd(tmp: Path, cxx: str) -> list[str]:
        return [cxx, *flags, "-I", str(folder), "-I", str(ap_types_dir()), "-o", str(tmp / "kernel.so"),
                str(tmp / "shim.cpp")]

    out = _cached_build(info, "lib", parts, lambda tmp: (tmp / "shim.cpp").write_text(shim), cmd)
    _first_call(out, desc)
    return out / "kernel.so"


def build_testbench(info: KernelInfo) -> Path:
    """Path of the kernel's testbench executable (sources + `testbench` from the description)."""
    desc, folder = info.desc, info.folder
    if not desc.testbench:
        raise CsimError(f"{folder / 'description.json'}: field 'testbench' is not set")
    tb = folder / desc.testbench
    if not tb.is_file():
        raise CsimError(f"{folder / 'description.json'}: field 'testbench': {tb} does not exist")
    sources = [folder / s for s in desc.sources if s.endswith(SOURCE_EXT)] + [tb]
    parts = [" ".join(CXXFLAGS).encode()]
    parts += [p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes()
              for p in sorted(set(_kernel_files(folder, desc)) | {tb})]

    def cmd(tmp: Path, cxx: str) -> list[str]:
        return [cxx, *CXXFLAGS, "-I", str(folder), "-I", str(ap_types_dir()), "-o", str(tmp / "testbench"),
                *map(str, sources)]

    return _cached_build(info, "tb", parts, lambda tmp: None, cmd) / "testbench"


# -- first call in a subprocess ---------------------------------------------------------------------------

def smoke_dims(desc: Description) -> dict[str, int]:
    """Dims of the first (checking) call: runtime dims at their maximum, m cut to its tile if that is big."""
    dims = {d: desc.dim_limit(d) for d in ("m", "n", "k")}
    if "m" in desc.runtime_dims and dims["m"] * dims["n"] * dims["k"] > _SMOKE_MACS:
        dims["m"] = desc.tile.m
    return call_dims(desc, **dims)


def block_call_spec(desc: BlockDescription, sizes: dict[str, int]) -> list[dict]:
    """`call_spec` of a map/rows kernel for a call of `sizes` (eps gets a typical 1e-5)."""
    spec = []
    for arg in desc.args:
        dt = parse_ctype(arg.ctype).dtype.str
        spec.append({"dtype": dt, "words": elements(desc, arg.role, sizes)} if arg.pointer
                    else {"dtype": dt, "value": sizes.get(arg.role, 1e-5)})
    return spec


def call_spec(desc: Description, dims: dict[str, int]) -> list[dict]:
    """Per argument: pointer (dtype, words) or scalar (dtype, value) for a call of `dims`."""
    spec = []
    for arg in desc.args:
        ct = parse_ctype(arg.ctype)
        if ct.pointer:
            spec.append({"dtype": ct.dtype.str, "words": words_for(arg, dims["m"], dims["n"], dims["k"])})
        else:
            spec.append({"dtype": ct.dtype.str, "value": dims[arg.role]})
    return spec


_SMOKE = f"""
import ctypes, json, sys
import numpy as np
lib = ctypes.CDLL(sys.argv[1])
rng = np.random.default_rng(0)
args, keep = [], []
for s in json.loads(sys.argv[2]):
    dt = np.dtype(s["dtype"])
    if "words" in s:
        buf = rng.integers(0, 256, s["words"] * dt.itemsize, dtype=np.uint8).view(dt)
        keep.append(buf)
        args += [ctypes.c_void_p(buf.ctypes.data), ctypes.c_size_t(buf.size)]
    else:
        args.append(np.ctypeslib.as_ctypes_type(dt)(s["value"]))
lib.{ENTRY}.restype = None
lib.{ENTRY}(*args)
"""


def _first_call(build: Path, desc: AnyDescription) -> None:
    ok, crash = build / "first_call.ok", build / "first_call.crash"
    if ok.is_file():
        return
    if crash.is_file():
        raise KernelCrash(crash.read_text().strip())
    if desc.op == "gemm":
        dims = smoke_dims(desc)
        spec = call_spec(desc, dims)
    else:
        dims = max_sizes(desc)
        spec = block_call_spec(desc, dims)
    cmd = [sys.executable, "-c", _SMOKE, str(build / "kernel.so"), json.dumps(spec)]
    shape = " ".join(f"{k}={v}" for k, v in dims.items())
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise KernelCrash(f"kernel {desc.name} ({build / 'kernel.so'}): the first call ({shape}, random data, "
                          f"run in a subprocess) did not finish within {SMOKE_TIMEOUT_S} s") from None
    if proc.returncode == 0:
        atomic_write(ok, "ok\n")
        return
    how = (f"was killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
           else f"exited with status {proc.returncode}")
    tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
    msg = (f"kernel {desc.name} crashed: its first call ({shape}, random data, run in a subprocess from "
           f"{build / 'kernel.so'}) {how}" + (f"\n{tail}" if tail else ""))
    if proc.returncode < 0:
        atomic_write(crash, msg + "\n")
    raise KernelCrash(msg)
