"""Weight cache: a B operand quantized (or split into limbs) once, reused until the tensor is written.

Entries hang off an *owner* object through a `WeakKeyDictionary` — by default the weight's
`untyped_storage()`, which every alias of the tensor shares (views, `detach`, `nn.Parameter`) — so they die
with the storage. Within an owner, entries are keyed by the view geometry (dtype, shape, strides, offset)
and what the quantization depends on (scheme, qmax, digit width); each remembers the *version* it was made
from, by default ``t._version`` (bumped by every in-place write through torch, shared by views). A
version mismatch re-quantizes. Writes that bypass the version counter (``t.data.mul_()``, raw memory) are
not seen: pass an explicit `version` (e.g. a device write generation) or call `invalidate_weights`.
Inference-mode tensors have no version counter and are quantized per call (counted as ``weight_uncached``).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch

from .limbs import Operand
from .stats import STATS


@dataclass(eq=False)
class QuantizedWeight:
    """A prepared B operand: stacked int8 limbs, and for float weights the scales and non-finite columns.

    `serial` names a cached entry for its lifetime and is never reused (None when not cached): a changed
    weight is prepared anew with a new number, so a unit keeping tiles by it never sees stale words.
    """

    operand: Operand
    scale: torch.Tensor | None
    bad: torch.Tensor | None
    key: tuple = ()
    version: Hashable = None
    owner: weakref.ref | None = None
    serial: int | None = None


_cache: weakref.WeakKeyDictionary[object, dict[tuple, QuantizedWeight]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_serials = itertools.count(1)


def geometry(t: torch.Tensor) -> tuple:
    return t.dtype, t.shape, t.stride(), t.storage_offset()


def _owner(t: torch.Tensor, owner: object | None) -> object:
    if owner is None:
        return t.untyped_storage()
    return owner.untyped_storage() if isinstance(owner, torch.Tensor) else owner


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference tensors track no version
        return None


def cached(t: torch.Tensor, params: tuple, build: Callable[[], QuantizedWeight], owner: object | None,
           version: Hashable | None) -> QuantizedWeight:
    """The entry for weight `t` prepared with `params`, built by `build()` if missing or stale."""
    key = (geometry(t), params)
    version = _version(t) if version is None else version
    if version is None:
        STATS.count("weight_uncached")
        return build()
    own = _owner(t, owner)
    with _lock:
        try:
            entries = _cache.get(own)
        except TypeError as e:
            raise TypeError(f"weight cache owner {type(own).__name__} cannot be weakly referenced") from e
        hit = None if entries is None else entries.get(key)
    if hit is not None and hit.version == version:
        STATS.count("weight_cache_hits")
        return hit
    qw = build()
    qw.key, qw.version, qw.owner = key, version, weakref.ref(own)
    STATS.count("weight_quantizations")
    with _lock:
        qw.serial = next(_serials)
        _cache.setdefault(own, {})[key] = qw
    return qw


def is_current(qw: QuantizedWeight, t: torch.Tensor, params: tuple, owner: object | None,
               version: Hashable | None) -> bool:
    """Whether handle `qw` was made from `t`'s memory, geometry, `params` and current version."""
    if qw.owner is None or qw.owner() is not _owner(t, owner) or qw.key != (geometry(t), params):
        return False
    return qw.version == (_version(t) if version is None else version)


def invalidate_weights(owner: object) -> None:
    """Drop every cached entry of `owner` (a tensor, whose storage is used, or the owner object itself)."""
    own = owner.untyped_storage() if isinstance(owner, torch.Tensor) else owner
    with _lock:
        _cache.pop(own, None)


def cached_entries() -> int:
    """Number of live cache entries (all owners)."""
    with _lock:
        return sum(len(v) for v in _cache.values())
