"""Shared pieces of the examples: the quantization schemes compared, target selection, the cache folder."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .. import reporting
from ..buildcache import cache_root
from ..engine import QuantConfig, quant_config, schemes, unsupported
from ..targets import registry

T = TypeVar("T")


def compared_schemes() -> dict[str, QuantConfig]:
    """The schemes every example reports: the engine's default first (the figure that must hold), the
    coarser per-tensor scheme, then every other registered weight scheme (per-group ones, and any of the
    user's) with the default per-row activations."""
    out = {"default": QuantConfig(), "per_tensor": QuantConfig.per_tensor()}
    for name in schemes("weights"):
        if name not in ("per_channel", "per_tensor"):
            out[name] = QuantConfig(weights=name)
    return out


def run_schemes(forward: Callable[[], T], announce: Callable[[str], None]
                ) -> tuple[dict[str, tuple[QuantConfig, T, float]], dict[str, dict[str, str]], dict[str, Any]]:
    """Run `forward()` on zynq under each of `compared_schemes()` (`announce(name)` first), each with a fresh
    report: per scheme its config, result and seconds; the schemes the active kernel cannot run (their
    entries for the example's ``schemes``: label and ``skipped`` reason); the default scheme's report."""
    runs: dict[str, tuple[QuantConfig, T, float]] = {}
    skipped: dict[str, dict[str, str]] = {}
    report: dict[str, Any] = {}
    for name, qcfg in compared_schemes().items():
        reason = unsupported(qcfg)
        if reason is not None:
            skipped[name] = {"scheme": scheme_label(qcfg), "skipped": reason}
            continue
        announce(name)
        reporting.reset_report()
        t0 = time.perf_counter()
        with quant_config(qcfg):
            out = forward()
        runs[name] = (qcfg, out, time.perf_counter() - t0)
        if name == "default":
            report = reporting.report().to_dict()
    return runs, skipped, report


def select_target(target: str | None, offload: str | list[str] | None = None) -> registry.ActiveTarget:
    """Make `target` active (None keeps the current choice, else ``PYNQTORCH_TARGET``, else ref) with the
    `offload` selection (None keeps the current one, else ``PYNQTORCH_OFFLOAD``)."""
    if target is None and offload is None:
        return registry.active()
    return registry.use(target, offload=offload)


def ops_on_target(report: dict[str, Any]) -> list[str]:
    """The aten ops that ran on kernels, from `Report.to_dict()`."""
    return sorted(report["accelerated"])


def cache_dir() -> Path:
    """Folder for trained example weights: ``<pynqtorch cache>/examples`` (see ``PYNQTORCH_CACHE``)."""
    path = cache_root() / "examples"
    path.mkdir(parents=True, exist_ok=True)
    return path


def scheme_label(cfg: QuantConfig) -> str:
    """``per_channel / per_row`` style text for a config (weights / activations)."""
    return f"{cfg.weights} / {cfg.activations}"


def fallback_ops(report: dict[str, Any]) -> dict[str, int]:
    """Calls per op that ran on the CPU fallback, from `Report.to_dict()`, most called first."""
    return dict(sorted(((op, s["calls"]) for op, s in report["cpu"].items()), key=lambda kv: -kv[1]))
