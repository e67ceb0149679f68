"""Compiling C/C++ into a content-addressed cache: the compiler, the cache folder, locked atomic builds.

Used by C simulation (a kernel's HLS C++) and by the engine's native host passes. A build lives in
``cache_root()/<area>/<stem>-<hash>``, the hash covering every input (sources, flags, compiler identity);
it is made in a temporary folder and renamed into place under a file lock, so concurrent processes build
once and never see a partial result.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path


class BuildError(RuntimeError):
    """A build cannot run here (no compiler); the message says what to install or set."""


def compiler() -> str:
    """Path of the C++ compiler (``$CXX`` or ``g++``); `BuildError` when missing."""
    name = os.environ.get("CXX", "g++")
    path = shutil.which(name)
    if path is None:
        raise BuildError(f"C++ compiler {name!r} not found on PATH (install g++, or set CXX)")
    return path


@cache
def compiler_version(cxx: str) -> str:
    """The compiler's identity for cache keys (version line and target triple)."""
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout
    machine = subprocess.run([cxx, "-dumpmachine"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0].strip() + " " + machine.strip()


# Code for the PYNQ-Z2's Cortex-A9 (NEON with VFPv3, no VFPv4: a fused multiply-add would be SIGILL); the same
# flags as sw/build_torch.sh's CPU_FLAGS (a test holds the two equal).
CORTEX_A9_FLAGS = ("-mcpu=cortex-a9", "-mfpu=neon", "-mfloat-abi=hard")


def cpu_flags(cxx: str) -> tuple[str, ...]:
    """Target CPU flags for `cxx`: the Cortex-A9's when it builds 32-bit hard-float ARM code (on the board,
    or a cross compiler), else none (the compiler's default for its host)."""
    machine = compiler_version(cxx).rsplit(" ", 1)[-1]
    return CORTEX_A9_FLAGS if machine.startswith("arm") and machine.endswith("gnueabihf") else ()


def cache_root() -> Path:
    """Cache folder: ``$PYNQTORCH_CACHE``, else ``$XDG_CACHE_HOME/pynqtorch``, else ``~/.cache/pynqtorch``."""
    env = os.environ.get("PYNQTORCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pynqtorch"


def digest(parts: list[bytes]) -> str:
    """A short hash of `parts` (length-prefixed, so part boundaries matter)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:20]


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on file `path` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see the old content or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def cached_build(area: str, stem: str, key_parts: list[bytes], build: Callable[[Path, str], None]) -> Path:
    """The folder of a finished build keyed by `key_parts` and the compiler: ``build(tmpdir, cxx)`` runs
    only when no such folder exists (raising leaves nothing behind)."""
    cxx = compiler()
    key = digest(key_parts + [compiler_version(cxx).encode()])
    root = cache_root() / area
    final = root / f"{stem}-{key}"
    if (final / "done").is_file():
        return final
    with locked(root / f".{stem}-{key}.lock"):
        if (final / "done").is_file():
            return final
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".build-{stem}-"))
        try:
            build(tmp, cxx)
            (tmp / "done").write_text("ok\n")
            tmp.chmod(0o755)
            if final.exists():
                shutil.rmtree(final)  # an interrupted earlier build without its "done" marker
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final
