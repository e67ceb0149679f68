"""The csim target: the kernels' own C++ compiled with g++ equals the golden model bit for bit."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from pynqtorch.hw.kernels import KernelInfo, find_kernel, kernels, preferred_kernel
from pynqtorch.targets.base import golden_gemm
from pynqtorch.targets.csim import CsimLibrary, CsimTarget, CsimUnit

pytestmark = pytest.mark.skipif(CsimTarget.probe() is not None, reason=f"csim unavailable: {CsimTarget.probe()}")

BUNDLED = ("gemm_i8_dsp", "gemm_i8_fabric", "gemm_i8_packed")


@pytest.fixture(scope="session")
def units() -> dict[str, CsimUnit]:
    """One unit per bundled kernel (each compiled once per test session into the session cache)."""
    return {name: CsimUnit(f"test:{name}", CsimLibrary(name)) for name in BUNDLED}


def _extremes(m: int, n: int, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    alt = np.where(np.arange(k) % 2, -128, 127).astype(np.int8)
    checker_a = np.where(np.add.outer(np.arange(m), np.arange(k)) % 2, -128, 127).astype(np.int8)
    checker_b = np.where(np.add.outer(np.arange(k), np.arange(n)) % 2, 127, -128).astype(np.int8)
    return [(np.full((m, k), -128, np.int8), np.full((k, n), -128, np.int8)),
            (np.full((m, k), 127, np.int8), np.full((k, n), 127, np.int8)),
            (np.full((m, k), -128, np.int8), np.full((k, n), 127, np.int8)),
            (np.tile(alt, (m, 1)), np.tile(alt[:, None], (1, n))),
            (checker_a, checker_b)]


@pytest.mark.parametrize("name", ["gemm_i8_dsp", "gemm_i8_fabric"])
def test_fixed_tile_kernels_bit_exact(units: dict[str, CsimUnit], name: str) -> None:
    unit = units[name]
    rng = np.random.default_rng(7)
    cases = [(rng.integers(-128, 128, (256, 256), dtype=np.int8), rng.integers(-128, 128, (256, 256), dtype=np.int8))]
    cases += _extremes(256, 256, 256)
    for a, b in cases:
        got = unit.run(a, b)
        assert got.dtype == np.int64 and got.shape == (256, 256)
        assert np.array_equal(got, golden_gemm(a, b, unit.desc.arith))
    assert int(unit.run(*cases[2])[0, 0]) == 256 * 127 * 127


@pytest.mark.parametrize(("m", "n", "k"), [(1, 32, 8), (3, 96, 40), (17, 256, 1024), (256, 256, 256),
                                           (1024, 32, 16), (5, 224, 264)])
def test_packed_kernel_runtime_shapes_bit_exact(units: dict[str, CsimUnit], m: int, n: int, k: int) -> None:
    unit = units["gemm_i8_packed"]
    rng = np.random.default_rng(m * 1000 + n + k)
    cases = [(rng.integers(-128, 128, (m, k), dtype=np.int8), rng.integers(-128, 128, (k, n), dtype=np.int8))]
    if m * n * k <= 1 << 22:
        cases += _extremes(m, n, k)
    for a, b in cases:
        assert np.array_equal(unit.run(a, b), golden_gemm(a, b, unit.desc.arith))


def test_packed_kernel_is_preferred() -> None:
    assert preferred_kernel().name == "gemm_i8_packed"


def test_unit_rejects_shapes_the_kernel_does_not_take(units: dict[str, CsimUnit]) -> None:
    with pytest.raises(ValueError, match="fixed tiles of m=256"):
        units["gemm_i8_dsp"].run(np.zeros((128, 256), np.int8), np.zeros((256, 256), np.int8))
    with pytest.raises(ValueError, match="k=1032 must be a positive multiple of 8 up to 1024"):
        units["gemm_i8_packed"].run(np.zeros((1, 1032), np.int8), np.zeros((1032, 32), np.int8))
    with pytest.raises(ValueError, match="inner dims differ"):
        units["gemm_i8_packed"].run(np.zeros((1, 16), np.int8), np.zeros((8, 32), np.int8))


def test_library_call_checks_buffers_and_scalars(units: dict[str, CsimUnit]) -> None:
    lib = units["gemm_i8_packed"].library
    a = np.zeros(2 * 16 // 8, np.uint64)
    b = np.zeros(32 * 16 // 8, np.uint64)
    c = np.full(2 * 32, -1, np.int32)
    lib.call(a=a, b=b, c=c, m=2, n=32, k=16)
    assert not c.any()
    with pytest.raises(TypeError, match="missing \\['k'\\], unexpected \\['kk'\\]"):
        lib.call(a=a, b=b, c=c, m=2, n=32, kk=16)
    with pytest.raises(TypeError, match="buffer 'a' has dtype int64, expected uint64"):
        lib.call(a=a.view(np.int64), b=b, c=c, m=2, n=32, k=16)
    with pytest.raises(ValueError, match="buffer 'c' has 63 words, needs 64"):
        lib.call(a=a, b=b, c=c[:63], m=2, n=32, k=16)
    with pytest.raises(TypeError, match="scalar 'm' must be an int"):
        lib.call(a=a, b=b, c=c, m=2.0, n=32, k=16)
    with pytest.raises(ValueError, match="n=8 must be a positive multiple of 32"):
        lib.call(a=a, b=b, c=c, m=2, n=8, k=16)
    with pytest.raises(TypeError, match="buffer 'a' is not C-contiguous"):
        lib.call(a=np.zeros(8, np.uint64)[::2], b=b, c=c, m=2, n=32, k=16)
    c.flags.writeable = False
    with pytest.raises(TypeError, match="result buffer 'c' is read-only"):
        lib.call(a=a, b=b, c=c, m=2, n=32, k=16)


def test_library_words_from_packing_drive_the_kernel(units: dict[str, CsimUnit]) -> None:
    """The raw-buffer interface the virtual board uses: packed words in, int32 words out."""
    from pynqtorch.hw.packing import pack_operand, unpack_result, words_for

    lib = units["gemm_i8_packed"].library
    desc = lib.desc
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, (4, 64), dtype=np.int8)
    b = rng.integers(-128, 128, (64, 32), dtype=np.int8)
    c = np.zeros(words_for(desc.arg("c"), 4, 32, 64) + 10, np.int32)  # larger buffers are fine
    lib.call(a=pack_operand(a, desc.arg("a")), b=pack_operand(b, desc.arg("b")), c=c, m=4, n=32, k=64)
    assert np.array_equal(unpack_result(c, desc.arg("c"), 4, 32), golden_gemm(a, b, desc.arith))
    assert not c[4 * 32:].any()


def test_target_units_run_in_parallel_threads() -> None:
    target = CsimTarget(units=3)
    desc = kernels()["gemm_i8_packed"].desc
    us = target.compute_units(desc)
    assert len(us) == 3 and len({u.library.path for u in us}) == 3
    rng = np.random.default_rng(11)
    jobs = [(rng.integers(-128, 128, (64, 512), dtype=np.int8), rng.integers(-128, 128, (512, 128), dtype=np.int8))
            for _ in range(6)]
    out: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        out[i] = us[i % 3].run(*jobs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (a, b) in enumerate(jobs):
        assert np.array_equal(out[i], golden_gemm(a, b, desc.arith))
    assert sum(u.calls for u in us) == 6


def test_units_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNQTORCH_CSIM_UNITS", "1")
    assert len(CsimTarget().compute_units(kernels()["gemm_i8_dsp"].desc)) == 1
    monkeypatch.setenv("PYNQTORCH_CSIM_UNITS", "two")
    with pytest.raises(ValueError, match="PYNQTORCH_CSIM_UNITS='two' is not a positive integer"):
        CsimTarget()


def test_user_kernel_from_kernel_path_is_usable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "kernels" / "user_gemm"
    shutil.copytree(find_kernel("gemm_i8_packed").folder, folder)
    raw = json.loads((folder / "description.json").read_text())
    raw.update(name="user_gemm", priority=20)
    (folder / "description.json").write_text(json.dumps(raw))
    monkeypatch.setenv("PYNQTORCH_KERNEL_PATH", str(tmp_path / "kernels"))
    info = kernels()["user_gemm"]
    assert info.origin == "env" and info.folder == folder.resolve()
    assert preferred_kernel().name == "user_gemm"
    [unit] = CsimTarget(units=1).compute_units(info.desc)
    rng = np.random.default_rng(5)
    a, b = rng.integers(-128, 128, (9, 96), dtype=np.int8), rng.integers(-128, 128, (96, 64), dtype=np.int8)
    assert np.array_equal(unit.run(a, b), golden_gemm(a, b, info.desc.arith))


def test_description_not_on_search_path_needs_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    shutil.copytree(find_kernel("gemm_i8_packed").folder, folder)
    raw = json.loads((folder / "description.json").read_text())
    raw["name"] = "elsewhere_gemm"
    (folder / "description.json").write_text(json.dumps(raw))
    info = find_kernel(folder)
    with pytest.raises(RuntimeError, match="'elsewhere_gemm' is not on the kernel search path"):
        CsimTarget(units=1).compute_units(info.desc)
    [unit] = CsimTarget(units=1).compute_units(KernelInfo(info.desc, info.folder, "folder"))
    a, b = np.ones((1, 8), np.int8), np.ones((8, 32), np.int8)
    assert unit.run(a, b).tolist() == [[8] * 32]
