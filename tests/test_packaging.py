"""A non-editable install carries the bundled kernels, overlays, the ARMv7l build script, the native sources
and the torch.compile backend's entry point."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_install_finds_bundled_hardware(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(REPO)], check=True)
    (wheel,) = glob.glob(str(tmp_path / "dist" / "pynqtorch-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(tmp_path / "site"), wheel], check=True)
    probe = ("import pynqtorch, json; from pynqtorch.hw.kernels import hw_root, kernels; "
             "from pynqtorch.hw.overlay import overlays; "
             "print(json.dumps([pynqtorch.__file__, str(hw_root()), sorted(kernels()), sorted(overlays()), "
             "(hw_root().parent / '_sw' / 'build_torch.sh').is_file(), "
             "__import__('pynqtorch.hostops').hostops.source().is_file(), "
             "(__import__('pathlib').Path(pynqtorch.__file__).parent / 'device' / 'native.cpp').is_file(), "
             "[e.value for e in __import__('importlib.metadata').metadata.entry_points("
             "group='torch_dynamo_backends', name='pynqtorch')]]))")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, env=env,
                         cwd=tmp_path).stdout
    module, root, kernels, overlays, has_sw, has_hostops, has_native, backends = json.loads(
        out.strip().splitlines()[-1])
    assert module.startswith(str(tmp_path / "site"))
    assert root == str(tmp_path / "site" / "pynqtorch" / "_hw")
    assert {"gemm_i8_dsp", "gemm_i8_fabric", "gemm_i8_packed"} <= set(kernels)
    assert {"gemm_single", "gemm_dual", "gemm_packed"} <= set(overlays)
    assert has_sw
    assert has_hostops  # the native host passes' C++ source ships in the wheel
    assert has_native  # so does the device's native runtime hooks'
    assert backends == ["pynqtorch.device.backend:pynqtorch"]  # torch.compile(..., backend="pynqtorch")
