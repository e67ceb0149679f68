"""Building kernels for C simulation: cache, concurrency, compiler errors, signature checks, crashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pynqtorch.hw.kernels import find_kernel
from pynqtorch.targets.csim import CsimLibrary, CsimTarget
from pynqtorch.targets.csim import build as csim_build
from pynqtorch.targets.csim import shim as csim_shim
from pynqtorch.targets.csim.build import CompileError, KernelCrash, SignatureError, build_library

pytestmark = pytest.mark.skipif(CsimTarget.probe() is not None, reason=f"csim unavailable: {CsimTarget.probe()}")

FIXTURES = Path(__file__).parent / "fixtures" / "kernels"
SRC = Path(__file__).resolve().parents[1] / "src"


def _copy_kernel(name: str, dest: Path, **changes: object) -> Path:
    src = find_kernel(name).folder
    dest.mkdir(parents=True)
    for f in src.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    if changes:
        raw = json.loads((dest / "description.json").read_text())
        raw.update(changes)
        (dest / "description.json").write_text(json.dumps(raw))
    return dest


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("PYNQTORCH_CACHE", str(root))
    return root / "csim"


def test_cache_hit_and_rebuild_on_change(tmp_path: Path, cache: Path) -> None:
    folder = _copy_kernel("gemm_i8_packed", tmp_path / "k")
    first = build_library(find_kernel(folder))
    stamp = first.stat().st_mtime_ns
    again = build_library(find_kernel(folder))
    assert again == first and again.stat().st_mtime_ns == stamp  # cache hit: not rebuilt
    header = folder / "gemm_i8_packed.hpp"
    header.write_text(header.read_text() + "\n// a header change\n")
    changed = build_library(find_kernel(folder))
    assert changed != first and changed.is_file()
    source = folder / "gemm_i8_packed.cpp"
    source.write_text(source.read_text().replace("(acc_t)0", "(acc_t)1"))
    broken = CsimLibrary(find_kernel(folder))
    assert broken.path not in (first, changed)
    c = np.zeros(32, np.int32)
    broken.call(a=np.zeros(1, np.uint64), b=np.zeros(32, np.uint64), c=c, m=1, n=32, k=8)
    assert c.tolist() == [1] * 32  # the edited source is what runs
    assert len([p for p in cache.iterdir() if p.is_dir() and "-lib-" in p.name]) == 3
    assert not [p for p in cache.iterdir() if p.name.startswith(".build-")]


def test_two_processes_build_the_same_kernel_at_once(tmp_path: Path, cache: Path) -> None:
    folder = _copy_kernel("gemm_i8_dsp", tmp_path / "k")
    code = ("import sys, numpy as np\n"
            "from pynqtorch.targets.csim import CsimLibrary\n"
            "lib = CsimLibrary(sys.argv[1])\n"
            "a = np.full(8192, 0x0101010101010101, np.uint64); c = np.zeros(65536, np.int32)\n"
            "lib.call(in1=a, in2=a, out=c)\n"
            "assert (c == 256).all()\n"
            "print(lib.path)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1
    assert not [p for p in cache.iterdir() if p.name.startswith(".build-")]


def test_compile_error_shows_compiler_lines_and_file(tmp_path: Path, cache: Path) -> None:
    folder = _copy_kernel("gemm_i8_packed", tmp_path / "k")
    source = folder / "gemm_i8_packed.cpp"
    lines = source.read_text().splitlines()
    lineno = next(i for i, line in enumerate(lines, 1) if "const int groups" in line)
    lines[lineno - 1] = "    const int groups = n / ;"
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(CompileError) as err:
        build_library(find_kernel(folder))
    msg = str(err.value)
    assert f"gemm_i8_packed.cpp:{lineno}:" in msg and "error:" in msg
    assert str(folder) in msg
    assert not [p for p in cache.iterdir() if p.is_dir()]  # nothing half-built left in the cache


@pytest.mark.parametrize(("change", "message"), [
    ({"top": "gemm_i8_missing"}, "field 'top': no definition of function 'gemm_i8_missing'"),
    ({"runtime_dims": ["m"], "max": {"m": 256, "n": 256, "k": 256},
      "extra_arg": {"name": "m", "role": "m", "interface": "s_axilite", "ctype": "int", "offset": "0x34"}},
     "gemm_i8_dsp() takes 3 arguments (const word_t *in1, const word_t *in2, int *out) but"),
    ({"rename": "x1"}, "argument 0 of gemm_i8_dsp() is 'in1' but"),
    ({"sources": ["gone.cpp"]}, "field 'sources':"),
])
def test_bad_signature_rejected_before_compiling(tmp_path: Path, cache: Path, change: dict, message: str) -> None:
    folder = _copy_kernel("gemm_i8_dsp", tmp_path / "k")
    raw = json.loads((folder / "description.json").read_text())
    if "extra_arg" in change:
        raw["args"].append(change.pop("extra_arg"))
    if "rename" in change:
        raw["args"][0]["name"] = change.pop("rename")
    raw.update(change)
    (folder / "description.json").write_text(json.dumps(raw))
    with pytest.raises(SignatureError) as err:
        build_library(find_kernel(folder))
    assert message in str(err.value)
    assert str(folder) in str(err.value)
    assert not cache.exists() or not any(cache.iterdir())  # rejected before any compiler run


def test_crashing_kernel_is_reported_not_fatal(cache: Path) -> None:
    with pytest.raises(KernelCrash, match="crashed: its first call .* was killed by SIGSEGV"):
        CsimLibrary(FIXTURES / "gemm_i8_null_deref")
    with pytest.raises(KernelCrash, match="SIGSEGV"):  # remembered for this build, not re-run
        CsimLibrary(FIXTURES / "gemm_i8_null_deref")


def test_missing_headers_or_compiler_make_csim_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    csim_build.ap_types_dir.cache_clear()
    monkeypatch.setitem(sys.modules, "hls4ml", None)
    try:
        reason = CsimTarget.probe()
    finally:
        monkeypatch.delitem(sys.modules, "hls4ml")
        csim_build.ap_types_dir.cache_clear()
    assert reason is not None and "hls4ml, which is not installed" in reason
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    assert "C++ compiler 'no-such-compiler-xyz' not found" in CsimTarget.probe()
    with pytest.raises(RuntimeError, match="no-such-compiler-xyz"):
        build_library(find_kernel("gemm_i8_dsp"))


def test_generated_shim_follows_the_description() -> None:
    info = find_kernel("gemm_i8_packed")
    shim = csim_shim.generate_shim(info.folder, info.desc)
    assert '#include "gemm_i8_packed.cpp"' in shim and '#include "gemm_i8_packed.hpp"' not in shim
    assert (f'extern "C" void {csim_shim.ENTRY}(uint64_t *a, size_t a_words, uint64_t *b, size_t b_words, '
            "int *c, size_t c_words, int m, int n, int k)") in shim
    assert "gemm_i8_packed(a_ap.data(), b_ap.data(), c, m, n, k);" in shim
