"""Shared pieces of the examples: the quantization schemes compared, target selection, the cache folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..buildcache import cache_root
from ..engine import QuantConfig
from ..targets import registry

# The schemes every example reports: the engine's default first (the figure that must hold), then the
# coarser per-tensor scheme for comparison.
SCHEMES: dict[str, QuantConfig] = {
    "default": QuantConfig(),
    "per_tensor": QuantConfig.per_tensor(),
}


def select_target(target: str | None) -> registry.ActiveTarget:
    """Make `target` active (None keeps the current choice, else ``PYNQTORCH_TARGET``, else ref)."""
    return registry.use(target) if target is not None else registry.active()


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
