"""Finding kernel and overlay folders: bundled ones, `PYNQTORCH_KERNEL_PATH`, and `add_kernel_path()`."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .description import DescriptionError
from .families import AnyDescription, load_description

_user_paths: list[Path] = []


def hw_root() -> Path:
    """The bundled `hw/` folder: `pynqtorch/_hw` in an installed wheel, `<repo>/hw` in a source checkout."""
    packaged = Path(__file__).resolve().parents[1] / "_hw"
    if packaged.is_dir():
        return packaged
    repo = Path(__file__).resolve().parents[3] / "hw"
    if repo.is_dir():
        return repo
    raise FileNotFoundError(f"bundled hw/ folder not found (looked in {packaged} and {repo})")


def add_kernel_path(path: str | os.PathLike) -> None:
    """Search `path` for kernel folders (a kernel folder itself, or a folder of kernel folders)."""
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise FileNotFoundError(f"kernel path {p} is not a folder")
    if p not in _user_paths:
        _user_paths.append(p)
    _scan.cache_clear()


def _search_paths() -> list[tuple[Path, str]]:
    env = [Path(s).expanduser() for s in os.environ.get("PYNQTORCH_KERNEL_PATH", "").split(os.pathsep) if s]
    return ([(p, "user") for p in _user_paths] + [(p, "env") for p in env]
            + [(hw_root() / "kernel", "bundled")])


@dataclass(frozen=True)
class KernelInfo:
    """A kernel folder found on the search path, with its validated description."""

    desc: AnyDescription
    folder: Path
    origin: str  # "bundled", "env" or "user"

    @property
    def name(self) -> str:
        return self.desc.name


def _folders(root: Path) -> list[Path]:
    if (root / "description.json").is_file():
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "description.json").is_file())


@cache
def _scan(env_key: str) -> tuple[dict[str, KernelInfo], tuple[str, ...]]:
    found: dict[str, KernelInfo] = {}
    errors: list[str] = []
    for root, origin in _search_paths():
        if origin == "env" and not root.is_dir():
            errors.append(f"PYNQTORCH_KERNEL_PATH entry {str(root)!r} "
                          f"{'is not a folder' if root.exists() else 'does not exist'}")
        for folder in _folders(root):
            try:
                desc = load_description(folder / "description.json")
            except DescriptionError as e:
                errors.append(f"kernel {folder.name!r} skipped: {e}")
                continue
            found.setdefault(desc.name, KernelInfo(desc, folder.resolve(), origin))
    for err in errors:
        warnings.warn(err, UserWarning, stacklevel=3)
    return found, tuple(errors)


def kernels() -> dict[str, KernelInfo]:
    """All kernels by name; earlier search paths (user, env, bundled) shadow later ones."""
    return _scan(os.environ.get("PYNQTORCH_KERNEL_PATH", ""))[0]


def kernel_errors() -> tuple[str, ...]:
    """Problems met on the search path: missing entries and kernels skipped for an invalid description."""
    return _scan(os.environ.get("PYNQTORCH_KERNEL_PATH", ""))[1]


def find_kernel(name_or_folder: str | os.PathLike) -> KernelInfo:
    """A kernel by name, or by folder path (validated on the spot)."""
    p = Path(name_or_folder)
    if (p / "description.json").is_file():
        return KernelInfo(load_description(p / "description.json"), p.resolve(), "folder")
    ks = kernels()
    if str(name_or_folder) not in ks:
        raise KeyError(f"unknown kernel {str(name_or_folder)!r}; known: {sorted(ks)}")
    return ks[str(name_or_folder)]


def preferred_kernel() -> KernelInfo:
    """The GEMM kernel the engine uses when none is named: highest description priority."""
    ks = [k for k in kernels().values() if k.desc.op == "gemm"]
    if not ks:
        raise FileNotFoundError("no GEMM kernels found (bundled hw/kernel is missing and PYNQTORCH_KERNEL_PATH "
                                "is empty)")
    return max(ks, key=lambda k: (k.desc.priority, k.name))


def kernels_for_op(aten: str) -> list[KernelInfo]:
    """The map/rows kernels declaring aten op `aten` (``aten::gelu``), highest priority first."""
    found = [k for k in kernels().values() if k.desc.op != "gemm" and aten in k.desc.aten]
    return sorted(found, key=lambda k: (-k.desc.priority, k.name))
