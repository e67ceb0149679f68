"""The GEMM engine: quantize (weights once), split integers into exact limbs, tile, schedule, accumulate.

Public API for the ops layer and users:
- `gemm(a, b, weight=..., config=..., out_dtype=...)`: ``a @ b`` on the active target (2-D or batched b);
  `a` may be a convolution's `Patches` (its im2col matrix, quantized without being built).
- `bind(b, owner=..., version=...)`: a `BoundGemm`, ``a -> a @ b`` for a weight looked up once and many small
  `a` (a recurrent layer's steps).
- `ConvPlan(b, owner, version, config)`: what the convolutions of one group with one cached weight matrix need,
  decided once (a repeat call: native quantization, the units' product, native dequantization into the result).
- `depthwise_conv(p, b, bias, channels_last, owner=..., version=...)`: a depthwise convolution in one native pass
  where the units' calls are exact integer products (None elsewhere: use `gemm`).
- `activation_gemm(a, b, scale=..., out=...)`: a batched product of two activations (attention's) in one native pass
  per product where the units' calls are exact integer products (None elsewhere: use `gemm`).
- `QuantConfig`, `set_quant_config`, `get_quant_config`, `quant_config` (context), `resolve_config`.
- `Scheme` (`PerTensor`, `PerLine`, `PerGroup`), `register_scheme`, `get_scheme`, `schemes`: quantization schemes;
  `unsupported(config)` says why the active kernel cannot run one (None if it can).
- `prepare_weight`, `QuantizedWeight`, `invalidate_weights`: the weight cache.
- `stats()` / `reset_stats()`: plain-dict statistics (tiles per unit, time per phase, counters).
- `use`, `active`, `available_targets`: target selection (re-exported from `pynqtorch.targets.registry`).
"""

from __future__ import annotations

from typing import Any

from ..hostops.patches import Patches
from ..targets.registry import active, available_targets, current, use
from .api import (
    FLOAT_DTYPES,
    INT_DTYPES,
    SUPPORTED_DTYPES,
    BoundGemm,
    ConvPlan,
    activation_gemm,
    bind,
    depthwise_conv,
    gemm,
    prepare_weight,
    unsupported,
)
from .quant import (
    PerGroup,
    PerLine,
    PerTensor,
    QuantConfig,
    Quantized,
    Scheme,
    get_quant_config,
    get_scheme,
    quant_config,
    register_scheme,
    resolve_config,
    schemes,
    set_quant_config,
)
from .stats import STATS
from .weights import QuantizedWeight, cached_entries, invalidate_weights


def stats() -> dict[str, Any]:
    """Engine statistics since the last `reset_stats()`: target, kernel, per-unit calls/tiles, phases."""
    snap = STATS.snapshot()
    cur = current()
    snap["target"] = cur.name if cur is not None else None
    snap["kernel"] = cur.desc.name if cur is not None else None
    snap["weight_cache_entries"] = cached_entries()
    return snap


def reset_stats() -> None:
    """Zero all engine counters and timers."""
    STATS.reset()


__all__ = [
    "FLOAT_DTYPES", "INT_DTYPES", "SUPPORTED_DTYPES", "BoundGemm", "ConvPlan", "Patches", "PerGroup", "PerLine", "PerTensor", "QuantConfig",
    "Quantized", "QuantizedWeight", "Scheme", "activation_gemm", "active", "available_targets", "bind", "depthwise_conv", "gemm", "get_quant_config",
    "get_scheme", "invalidate_weights", "prepare_weight", "quant_config", "register_scheme", "reset_stats",
    "resolve_config", "schemes", "set_quant_config", "stats", "unsupported", "use",
]
