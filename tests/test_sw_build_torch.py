"""sw/build_torch.sh: the plan (--dry-run), refusals of bad input, and (slow) a real armhf chroot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pynqtorch import hostops
from pynqtorch.buildcache import CORTEX_A9_FLAGS

SCRIPT = Path(__file__).resolve().parents[1] / "sw" / "build_torch.sh"
STAGES = ["host", "chroot", "mounts", "deps", "python", "source", "build", "wheel"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
        preexec: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(preexec or []), "bash", str(SCRIPT), *args], check=False, capture_output=True, text=True,
                          timeout=timeout, env=env)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this mount namespace."""
    prefix = str(path.resolve())
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def test_dry_run_plan_lists_every_stage_and_its_commands(tmp_path: Path) -> None:
    chroot = tmp_path / "c"
    r = run("--dry-run", "--chroot", str(chroot), "--torch-tag", "v2.13.0", "--jobs", "3", "--vision", "--audio",
            "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    positions = [out.index(f"stage {s}:") for s in STAGES]
    assert positions == sorted(positions)
    assert f"debootstrap --arch=armhf --variant=minbase --include=ca-certificates\\,python3 bookworm {chroot}" in out
    for mount in ("mount -t proc proc", "mount -t sysfs sys", f"mount --bind /dev {chroot}/dev",
                  f"mount --bind /dev/pts {chroot}/dev/pts"):
        assert mount in out
    for needle in ("pyenv install --skip-existing 3.10", "--branch v2.13.0 https://github.com/pytorch/pytorch.git",
                   "--branch v0.28.0 https://github.com/pytorch/vision.git",
                   "--branch v2.11.1 https://github.com/pytorch/audio.git",
                   "git submodule update --init --recursive", "BUILD_TEST=0", "USE_CUDA=0", "USE_DISTRIBUTED=0",
                   "MAX_JOBS=3", "setup.py bdist_wheel", f"{tmp_path / 'out'}"):
        assert needle in out, needle
    # Every mount made is released at the end, innermost first.
    tail = out[out.index("releasing mounts"):]
    assert tail.index(f"umount {chroot}/dev/pts") < tail.index(f"umount {chroot}/dev\n") < tail.index(
        f"umount {chroot}/proc")
    assert not chroot.exists(), "a dry run must not create anything"


def test_default_build_is_torch_2_13_for_the_cortex_a9(tmp_path: Path) -> None:
    r = run("--dry-run", "--stage", "build", "--chroot", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    flags = " ".join(CORTEX_A9_FLAGS)  # the native host passes use the same flags on the board
    assert "PYTORCH_BUILD_VERSION=2.13.0" in r.stdout
    assert f"CFLAGS=\\'{flags}\\'" in r.stdout and f"CXXFLAGS=\\'{flags}\\'" in r.stdout  # as printed by %q
    assert "vfpv4" not in r.stdout and "-march=armv7-a" not in r.stdout


# A multiply-add chain: with -ffp-contract=fast a VFPv4 target fuses it into VFMA, which the Cortex-A9 lacks.
PROBE = r"""
#include <stdio.h>
int main(void) {
    volatile float a = 1.5f, b = 2.25f, c = 0.125f;
    float acc = 0.0f;
    for (int i = 0; i < 8; i++) acc = acc * a + b * c;
    printf("%.6f\n", acc);
    return 0;
}
"""
CROSS_CC, CROSS_CXX, QEMU_ARM = "arm-linux-gnueabihf-gcc", "arm-linux-gnueabihf-g++", "qemu-arm-static"
needs_cross = pytest.mark.skipif(
    shutil.which(CROSS_CC) is None or shutil.which(QEMU_ARM) is None,
    reason="needs an armhf cross compiler and qemu-arm (apt-get install g++-arm-linux-gnueabihf qemu-user-static)")


def cross_compile_probe(out: Path, flags: list[str], static: bool = True) -> str:
    """Compile the probe for armhf with `flags`; its disassembly."""
    src = out.with_suffix(".c")
    src.write_text(PROBE)
    subprocess.run([CROSS_CC, "-O2", "-ffp-contract=fast", *(["-static"] if static else []), *flags, "-o",
                    str(out), str(src)], check=True, timeout=120)
    return subprocess.run(["arm-linux-gnueabihf-objdump", "-d", str(out)], check=True, capture_output=True,
                          text=True).stdout


@needs_cross
def test_cortex_a9_flags_run_on_a_cortex_a9_and_vfpv4_does_not(tmp_path: Path) -> None:
    good = tmp_path / "a9"
    assert "vfma" not in cross_compile_probe(good, list(CORTEX_A9_FLAGS))
    r = subprocess.run([QEMU_ARM, "-cpu", "cortex-a9", str(good)], capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0 and r.stdout.strip() == "13.853760", r
    # The flags this script used before: fused multiply-add, an illegal instruction on the board's CPU.
    bad = tmp_path / "vfpv4"
    assert "vfma" in cross_compile_probe(bad, ["-march=armv7-a", "-mfpu=neon-vfpv4", "-mfloat-abi=hard"])
    r = subprocess.run([QEMU_ARM, "-cpu", "cortex-a9", str(bad)], capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode in (-4, 128 + 4), r  # SIGILL


@needs_cross
def test_native_host_passes_built_for_armhf_target_the_cortex_a9(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which(CROSS_CXX) is None:
        pytest.skip(f"{CROSS_CXX} not installed")
    monkeypatch.setenv("CXX", CROSS_CXX)
    monkeypatch.setenv("PYNQTORCH_CACHE", str(tmp_path / "cache"))
    lib = hostops.build()
    attrs = subprocess.run(["arm-linux-gnueabihf-readelf", "-A", str(lib)], check=True, capture_output=True,
                           text=True).stdout
    assert "Tag_FP_arch: VFPv3" in attrs and "Tag_Advanced_SIMD_arch: NEONv1" in attrs, attrs
    code = subprocess.run(["arm-linux-gnueabihf-objdump", "-d", str(lib)], check=True, capture_output=True,
                          text=True).stdout
    assert "vfma" not in code


def test_dry_run_single_stage(tmp_path: Path) -> None:
    r = run("--dry-run", "--stage", "build", "--chroot", str(tmp_path / "c"), "--torch-tag", "v2.7.1")
    assert r.returncode == 0, r.stderr
    assert "stage build:" in r.stdout and "stage chroot:" not in r.stdout and "stage source:" not in r.stdout
    assert "PYTORCH_BUILD_VERSION=2.7.1" in r.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--stage", "compile"], "unknown stage 'compile'; stages are: host chroot"),
    (["--jobs", "0"], "--jobs must be a positive integer"),
    (["--python", "3.12.1"], "--python must be a 3.10 version"),
    (["--torch-tag", "main; rm -rf /"], "bad git tag"),
    (["--frobnicate"], "unknown option: --frobnicate"),
    (["--stage", "host", "--run", "true"], "--stage and --run cannot be combined"),
    (["--chroot", "/"], "--chroot must not be /"),
])
def test_bad_arguments_are_refused(args: list[str], message: str, tmp_path: Path) -> None:
    r = run("--dry-run", *(["--chroot", str(tmp_path / "c")] if "--chroot" not in args else []), *args)
    assert r.returncode == 2
    assert message in r.stderr


def test_foreign_chroot_folder_is_refused_and_left_alone(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    for args in (["--stage", "chroot"], ["--dry-run"], ["--run", "true"]):
        r = run("--chroot", str(foreign), *args)
        assert r.returncode == 2
        assert "has no .pynqtorch-chroot marker: refusing" in r.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["precious.txt"]
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_a_file_as_chroot_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    r = run("--dry-run", "--chroot", str(f))
    assert r.returncode == 2 and "exists and is not a folder" in r.stderr


def test_later_stage_without_chroot_says_which_stage_to_run(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the stage checks run after the root check")
    r = run("--stage", "deps", "--chroot", str(tmp_path / "empty"))
    assert r.returncode == 2
    assert "is not set up yet; run the 'chroot' stage first" in r.stderr
    assert mounts_under(tmp_path) == []


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs root and setpriv")
def test_non_root_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    r = run("--stage", "chroot", "--chroot", str(tmp_path / "c"), preexec=drop)
    assert r.returncode == 2
    assert "must run as root" in r.stderr
    assert not (tmp_path / "c").exists()
    # ... but a dry run works for anyone.
    assert run("--dry-run", "--chroot", str(tmp_path / "c"), preexec=drop).returncode == 0


def test_missing_host_tools_are_named_with_the_install_command(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the host stage runs after the root check")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # Just what the script itself needs; no debootstrap, qemu-arm-static or update-binfmts.
    for tool in ("bash", "env", "id", "realpath", "ls", "nproc", "chroot", "mountpoint", "mount", "grep"):
        (bindir / tool).symlink_to(shutil.which(tool))
    r = run("--stage", "host", "--chroot", str(tmp_path / "c"), env={"PATH": str(bindir)})
    assert r.returncode == 2
    assert "missing host tools; install them with: apt-get install -y debootstrap qemu-user-static " \
           "binfmt-support" in r.stderr


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare")
def test_unavailable_binfmt_misc_is_a_clear_error(tmp_path: Path) -> None:
    # In a private mount namespace, hide /proc/sys/fs under an empty tmpfs: binfmt_misc cannot be mounted.
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], check=False,
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespaces here: {probe.stderr.decode().strip()}")
    hide = f"mount -t tmpfs none /proc/sys/fs && exec bash {SCRIPT} --stage host --chroot {tmp_path / 'c'}"
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", hide],
                       check=False, capture_output=True, text=True, timeout=60)
    if "missing host tools" in r.stderr:
        pytest.skip("host tools are not installed")
    assert r.returncode == 2
    assert "binfmt_misc is unavailable" in r.stderr


@pytest.mark.slow
@pytest.mark.timeout(3600)  # debootstrap under qemu: minutes, more on a loaded machine
def test_real_armhf_chroot_runs_python_as_armv7l(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root")
    chroot = tmp_path / "armhf"
    start = time.monotonic()
    for stage in ("host", "chroot"):
        r = run("--stage", stage, "--chroot", str(chroot), timeout=3600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (chroot / ".pynqtorch-chroot").is_file()
    r = run("--chroot", str(chroot), "--run", "python3 -c 'import platform; print(platform.machine())'")
    assert r.returncode == 0, r.stderr
    assert "armv7l" in r.stdout.splitlines(), r.stdout
    assert mounts_under(chroot) == [], "mounts must be released after --run"
    if shutil.which(CROSS_CC) and shutil.which(QEMU_ARM):
        # A probe built with the board's flags, linked against the chroot's own libc, runs on a Cortex-A9.
        probe = tmp_path / "probe"
        cross_compile_probe(probe, list(CORTEX_A9_FLAGS), static=False)
        r = subprocess.run([QEMU_ARM, "-cpu", "cortex-a9", "-L", str(chroot), str(probe)], capture_output=True,
                           text=True, timeout=60, check=False)
        assert r.returncode == 0 and r.stdout.strip() == "13.853760", r
    # The stage is idempotent: a second run sees the stamp and does nothing.
    again = run("--stage", "chroot", "--chroot", str(chroot))
    assert again.returncode == 0 and "already done" in again.stdout
    # A failing command inside the chroot still releases the mounts.
    r = run("--chroot", str(chroot), "--run", "test -d /proc/self && exit 7")
    assert r.returncode == 7
    assert mounts_under(chroot) == []
    print(f"armhf chroot built and checked in {time.monotonic() - start:.0f} s")
    shutil.rmtree(chroot)


def test_cli_forwards_to_the_script(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", "from pynqtorch.cli import app; app()", "build-torch"]
    r = subprocess.run([*cmd, "--dry-run", "--stage", "source", "--chroot", str(tmp_path / "c"), "--torch-tag",
                        "v2.13.0", "--vision"], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert r.returncode == 0, r.stderr
    assert "stage source: PyTorch v2.13.0, vision v0.28.0" in r.stdout
    bad = subprocess.run([*cmd, "--stage", "nope"], capture_output=True, text=True, timeout=120, env=env,
                         check=False)
    assert bad.returncode == 2 and "unknown stage 'nope'" in bad.stderr
