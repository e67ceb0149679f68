"""The board's build of the native host passes (32-bit ARM with NEON, no AVX2 clone) computes the host build's bits:
`hostops_harness.cpp` runs the convolution passes on fixed inputs under both builds (ARM under qemu)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pynqtorch.buildcache import CORTEX_A9_FLAGS
from pynqtorch.hostops import FLAGS

CXX, CROSS_CXX, QEMU_ARM = "g++", "arm-linux-gnueabihf-g++", "qemu-arm-static"
HARNESS = Path(__file__).with_name("hostops_harness.cpp")


@pytest.mark.slow  # two -O3 builds of the passes: a minute or two
@pytest.mark.skipif(any(shutil.which(t) is None for t in (CXX, CROSS_CXX, QEMU_ARM)),
                    reason="needs g++, an armhf cross compiler and qemu-arm (apt-get install g++-arm-linux-gnueabihf "
                           "qemu-user-static)")
def test_arm_build_of_the_convolution_passes_equals_the_host_build(tmp_path: Path) -> None:
    flags = [f for f in FLAGS if f not in ("-fPIC", "-shared")]  # the library's arithmetic flags, as an executable
    host, arm = tmp_path / "host", tmp_path / "arm"
    subprocess.run([CXX, *flags, "-o", str(host), str(HARNESS)], check=True, timeout=300)
    subprocess.run([CROSS_CXX, *flags, *CORTEX_A9_FLAGS, "-static", "-o", str(arm), str(HARNESS)], check=True,
                   timeout=300)
    want = subprocess.run([str(host)], capture_output=True, text=True, check=True, timeout=120).stdout.splitlines()
    got = subprocess.run([QEMU_ARM, str(arm)], capture_output=True, text=True, check=True, timeout=300).stdout
    assert len(want) == 11 and got.splitlines() == want
    for line in want:  # every case taken; the padded im2col equals the row gather
        name, status, *rest = line.split()
        assert status == "0", line
        if name.startswith("padded"):
            assert rest[:2] == ["0", "1"], line
