"""Locating and invoking `sw/build_torch.sh`, the ARMv7l PyTorch build (a Debian armhf chroot under qemu)."""

from __future__ import annotations

import shutil
from pathlib import Path


class BuildScriptMissing(FileNotFoundError):
    """`build_torch.sh` (or bash) cannot be found; the message says where it was looked for."""


def build_script() -> Path:
    """`sw/build_torch.sh`: `pynqtorch/_sw` in an installed wheel, `<repo>/sw` in a source checkout."""
    here = Path(__file__).resolve()
    candidates = [here.parents[1] / "_sw" / "build_torch.sh", here.parents[3] / "sw" / "build_torch.sh"]
    for c in candidates:
        if c.is_file():
            return c
    raise BuildScriptMissing(f"build_torch.sh not found (looked in {', '.join(map(str, candidates))})")


def build_torch_command(args: list[str]) -> list[str]:
    """The argument list running the build script with `args` (passed through unchanged)."""
    bash = shutil.which("bash")
    if bash is None:
        raise BuildScriptMissing("bash is not on PATH; the ARMv7l build script needs bash")
    return [bash, str(build_script()), *args]
