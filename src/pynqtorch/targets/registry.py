"""Target selection: which target and kernel the engine runs on.

Targets are named; built-ins `ref` and `null` always load, `csim` and `board` are imported lazily from their
module path, so a missing or broken module only makes that target unavailable (with the reason). The
active target is chosen by `use(target=..., kernel=...)`, else by ``PYNQTORCH_TARGET`` (a name, or ``auto``
for the highest-priority available target), else `ref`. The kernel defaults to the preferred kernel found
on the kernel search path (`pynqtorch.hw.kernels.preferred_kernel`).
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..hw.description import Description, Tile
from ..hw.kernels import KernelInfo, find_kernel, preferred_kernel
from .base import ComputeUnit, Target, TargetUnavailable
from .offload import Offload, OffloadSpec, choose_kernel, parse_offload

DEFAULT_TARGET = "ref"
ENV_TARGET = "PYNQTORCH_TARGET"

_registered: dict[str, str | type[Target]] = {
    "ref": "pynqtorch.targets.ref:RefTarget",
    "null": "pynqtorch.targets.null:NullTarget",
    "csim": "pynqtorch.targets.csim:CsimTarget",
    "board": "pynqtorch.targets.board:BoardTarget",
}


def register_target(name: str, target: str | type[Target]) -> None:
    """Make `target` (a Target subclass or a ``"module:Class"`` path, imported on first use) selectable."""
    _registered[name] = target


def target_names() -> list[str]:
    return sorted(_registered)


def target_class(name: str) -> type[Target]:
    """The Target class registered as `name`; `TargetUnavailable` if its module cannot be imported."""
    if name not in _registered:
        raise ValueError(f"unknown target {name!r}; choose one of {target_names()} (or 'auto')")
    entry = _registered[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise TargetUnavailable(f"target {name!r}: cannot import {entry} ({type(e).__name__}: {e})") from e
        if not (isinstance(cls, type) and issubclass(cls, Target)):
            raise TargetUnavailable(f"target {name!r}: {entry} is not a Target subclass")
        return cls
    return entry


def unavailable_reason(name: str) -> str | None:
    """None when target `name` can run here, else why not."""
    try:
        return target_class(name).probe()
    except TargetUnavailable as e:
        return str(e)


def available_targets() -> dict[str, str | None]:
    """Every registered target with None (usable) or the reason it is not."""
    return {name: unavailable_reason(name) for name in target_names()}


def env_target() -> str:
    """The target named by ``PYNQTORCH_TARGET`` (unset or empty: the default); `ValueError` naming the valid
    targets for anything else."""
    name = os.environ.get(ENV_TARGET, "").strip()
    if not name:
        return DEFAULT_TARGET
    if name != "auto" and name not in _registered:
        raise ValueError(f"{ENV_TARGET}={name!r} is not a target; choose one of {target_names()} or 'auto' "
                         f"(or leave it unset for {DEFAULT_TARGET!r})")
    return name


def _auto() -> str:
    usable = [n for n in target_names() if unavailable_reason(n) is None]
    return max(usable, key=lambda n: target_class(n).priority)


@dataclass(eq=False)
class ActiveTarget:
    """A target instance bound to one kernel: its compute units and the call limits the engine tiles for."""

    name: str
    target: Target
    desc: Description
    kernel_folder: Path | None
    units: list[ComputeUnit]
    limits: Tile
    options: dict[str, Any]
    offload: Offload = field(default_factory=lambda: Offload(frozenset()))
    _on_close: list[Callable[[], None]] = field(default_factory=list)
    _blocks: dict[str, list | str] = field(default_factory=dict)
    closed: bool = False

    def block_binding(self, aten: str) -> tuple[KernelInfo, list] | str | None:
        """For a non-GEMM aten op: None when the offload selection leaves it to CPU, else its kernel and
        units on this target, or the reason it cannot run here."""
        if not self.offload.selects(aten):
            return None
        with _lock:
            return choose_kernel(self.target, aten, self._blocks)

    def on_close(self, fn: Callable[[], None]) -> None:
        """Call `fn` when this target is replaced or closed (the engine stops its worker threads)."""
        self._on_close.append(fn)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fn in self._on_close:
            fn()
        for u in self.units:
            u.close()
        for units in self._blocks.values():
            for u in units if isinstance(units, list) else ():
                u.close()


KernelSpec = str | os.PathLike | Description | KernelInfo

_lock = threading.RLock()
_active: ActiveTarget | None = None
_use_hooks: list[Callable[[Offload], None]] = []


def on_use(fn: Callable[[Offload], None]) -> None:
    """Call `fn(offload)` whenever `use()` selects ops to offload (the ops layer registers their kernels)."""
    _use_hooks.append(fn)


def _resolve_kernel(kernel: KernelSpec | None) -> tuple[Description, Path | None]:
    if kernel is None:
        info = preferred_kernel()
    elif isinstance(kernel, Description):
        return kernel, None
    elif isinstance(kernel, KernelInfo):
        info = kernel
    else:
        info = find_kernel(kernel)
    if info.desc.op != "gemm":
        raise ValueError(f"kernel {info.name!r} is a {info.desc.op} kernel; use(kernel=) takes a GEMM kernel, "
                         "map/rows kernels are chosen per op by use(offload=...)")
    return info.desc, info.folder


def _build(name: str, kernel: KernelSpec | None, options: dict[str, Any], offload: Offload) -> ActiveTarget:
    if name == "auto":
        name = _auto()
    cls = target_class(name)
    reason = cls.probe()
    if reason is not None:
        raise TargetUnavailable(f"target {name!r} is unavailable: {reason}")
    desc, folder = _resolve_kernel(kernel)
    try:
        target = cls(**options)
    except TypeError as e:
        raise TypeError(f"target {name!r} does not take options {sorted(options)}: {e}") from None
    units = target.compute_units(desc if folder is None else KernelInfo(desc, folder, "active"))
    if not units:
        raise TargetUnavailable(f"target {name!r} offers no compute units for kernel {desc.name!r}")
    return ActiveTarget(name, target, desc, folder, units, target.call_limits(desc), dict(options), offload)


def use(target: str | None = None, kernel: KernelSpec | None = None, offload: OffloadSpec = None,
        **options: Any) -> ActiveTarget:
    """Select the target (name or 'auto'), GEMM kernel (name, folder, Description or KernelInfo) and the
    non-GEMM ops offloaded to map/rows kernels (`offload`: 'gemm', 'all' or op names, see
    `targets.offload`).

    `options` go to the target's constructor (e.g. ``units=4`` for ref/null). Omitted arguments keep the
    current choice. The previous target is closed.
    """
    global _active
    with _lock:
        cur = _active
        selection = cur.offload if offload is None and cur is not None else parse_offload(offload)
        if target is None:
            target = cur.name if cur is not None else env_target()
            if cur is not None and not options:
                options = cur.options
        if kernel is None and cur is not None:
            kernel = cur.desc if cur.kernel_folder is None else KernelInfo(cur.desc, cur.kernel_folder, "active")
        new = _build(target, kernel, options, selection)
        for hook in _use_hooks:
            hook(selection)
        _active = new
    if cur is not None:
        cur.close()
    return new


def active() -> ActiveTarget:
    """The active target, chosen from ``PYNQTORCH_TARGET`` (default 'ref') on first use."""
    with _lock:
        if _active is None:
            return use()
        return _active


def reset() -> None:
    """Close the active target; the next `active()` chooses again from the environment."""
    global _active
    with _lock:
        cur, _active = _active, None
    if cur is not None:
        cur.close()


def current() -> ActiveTarget | None:
    """The active target if one was chosen already (never creates one)."""
    return _active
