"""The one call from ops into the engine: B operands owned by zynq weights are cached as weights (`weight_of` says
which B is a weight)."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch

from .. import engine
from ..device.storage import is_zynq, write_generation
from ..hostops.patches import Patches


class _Copy:
    """A B operand copied out of a zynq view at write generation `gen`, and the `engine.ConvPlan` of the convolutions
    using it (made at the first such call)."""

    __slots__ = ("b", "gen", "plan")

    def __init__(self, gen: int, b: torch.Tensor) -> None:
        self.gen, self.b, self.plan = gen, b, None


class _Derived:
    """Weak-referenceable owner of cache entries of a B operand derived from (copied out of) a zynq view; it also
    keeps the derived copies themselves (`copies`: key -> `_Copy`)."""

    __slots__ = ("__weakref__", "copies")

    def __init__(self) -> None:
        self.copies: dict[Hashable, _Copy] = {}


_DERIVED_ATTR = "_zynq_derived_owners"


def _derived_owner(src: torch.Tensor) -> _Derived:
    """The owner object for operands derived from zynq view `src`: one per view geometry, kept on the
    storage (so it lives as long as the memory), so copies made from different views never share entries."""
    st = src.untyped_storage()
    owners = getattr(st, _DERIVED_ATTR, None)
    if owners is None:
        owners = {}
        setattr(st, _DERIVED_ATTR, owners)
    key = (src.dtype, src.shape, src.stride(), src.storage_offset())
    owner = owners.get(key)
    if owner is None:
        owner = owners[key] = _Derived()
    return owner


def weight_of(t: torch.Tensor) -> torch.Tensor | None:
    """`t` if the GEMM-family ops treat it as a weight (a B operand cached as `gemm`'s `b_owner`, with the weight
    scheme), else None: a module parameter (`nn.Parameter`, also frozen), a leaf tensor that requires grad (trained
    like one), or a view of either. Anything else (an activation: attention keys and values, any computed or plain
    tensor) is data that may change every call: quantized per call with the activation scheme, no cache entry."""
    root = t._base if t._base is not None else t
    return t if isinstance(root, torch.nn.Parameter) or (root.requires_grad and root.grad_fn is None) else None


def gemm(a: torch.Tensor, b: torch.Tensor, *, b_owner: torch.Tensor | None,
         bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b`` (``+ bias`` as `engine.gemm` takes it) on CPU views through the engine (operands already checked by
    `gemm._check`).

    When `b` views a zynq tensor's memory, its quantization is cached on that tensor's storage and reused
    until the device writes the storage again (the write generation covers in-place ops, `out=`, `copy_`
    and `.data` writes alike). A `b` copied out of `b_owner` is cached the same way on an owner object per
    view of `b_owner`.
    """
    if is_zynq(b_owner):
        return _engine_gemm(a, b, _owner(b, b_owner), write_generation(b_owner), bias=bias)
    return _engine_gemm(a, b, bias=bias)


def _owner(b: torch.Tensor, b_owner: torch.Tensor) -> object:
    """The cache owner of CPU view `b` of zynq tensor `b_owner`: the tensor itself when `b` views its memory."""
    return (b_owner if b.untyped_storage().data_ptr() == b_owner.untyped_storage().data_ptr()
            else _derived_owner(b_owner))


def bind(b: torch.Tensor, *, b_owner: torch.Tensor | None) -> engine.BoundGemm:
    """``a -> a @ b`` (`engine.bind`), with `b` cached as `gemm` caches it and looked up once: for many products
    with one weight that nothing writes meanwhile (a recurrent layer's steps)."""
    if is_zynq(b_owner):
        return engine.bind(b, owner=_owner(b, b_owner), version=write_generation(b_owner))
    return engine.bind(b)


def gemm_derived(a: torch.Tensor | Patches, src: torch.Tensor | None, key: Hashable,
                 make: Callable[[], torch.Tensor], *, bias: torch.Tensor | None = None,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ make()``, where `make()` copies the B operand out of zynq view `src` (e.g. a reordered conv weight);
    a convolution's `bias` and `out` as `engine.gemm` takes them.

    The copy is made once per view of `src` and `key`, kept on that view's owner object with its cached
    quantization, and made again after the device writes `src`'s storage; without a zynq `src`, every call. A
    convolution of one group (`out` given) of a float32 input keeps its `engine.ConvPlan` with the copy: made again
    with it, or when the target or the quantization config changes.
    """
    if not is_zynq(src):
        return _engine_gemm(a, make(), bias=bias, out=out)
    copy, owner = _derived(src, key, make)
    weight: bool | engine.QuantizedWeight = True
    if out is not None and a.dtype == torch.float32 and not (a.requires_grad and torch.is_grad_enabled()):
        plan = copy.plan
        looked_up = plan is None or not plan.current()
        if looked_up:
            plan = copy.plan = engine.ConvPlan(copy.b, owner, copy.gen, None)
        if plan.direct and plan(a, bias, out, looked_up) is not None:
            return out
        if looked_up:  # looked up once for this call already
            weight = plan.qw
    return _engine_gemm(a, copy.b, owner, copy.gen, bias=bias, out=out, weight=weight)


def depthwise_derived(p: Patches, src: torch.Tensor | None, key: Hashable, make: Callable[[], torch.Tensor],
                      bias: torch.Tensor | None, channels_last: bool) -> torch.Tensor | None:
    """`engine.depthwise_conv` of `p` with the B operand `gemm_derived` gives for the same `src`, `key` and `make`
    (cached alike), or None: the caller then runs ``gemm_derived``. Without a zynq `src`, None."""
    if not is_zynq(src):
        return None
    copy, owner = _derived(src, key, make)
    return engine.depthwise_conv(p, copy.b, bias, channels_last, owner=owner, version=copy.gen)


def _derived(src: torch.Tensor, key: Hashable, make: Callable[[], torch.Tensor]) -> tuple[_Copy, _Derived]:
    """The copy `make()` of zynq view `src` under `key` made at `src`'s current write generation, and its owner
    object."""
    owner = _derived_owner(src)
    gen = write_generation(src)
    copy = owner.copies.get(key)
    if copy is None or copy.gen != gen:
        copy = owner.copies[key] = _Copy(gen, make())
    return copy, owner


def _engine_gemm(a: torch.Tensor | Patches, b: torch.Tensor, owner: object = None, version: int | None = None, *,
                 bias: torch.Tensor | None = None, out: torch.Tensor | None = None,
                 weight: bool | engine.QuantizedWeight = True) -> torch.Tensor:
    """`engine.gemm`, with `b` a weight (`weight`: True or its prepared form) cached on `owner` at `version` when an
    owner is given."""
    epilogue = {} if bias is None and out is None else {"bias": bias, "out": out}
    try:
        if owner is None:
            return engine.gemm(a, b, **epilogue)
        return engine.gemm(a, b, weight=weight, owner=owner, version=version, **epilogue)
    except OverflowError as e:
        raise OverflowError(f"{e}. With torch ops the result has the operands' dtype: cast the operands to a "
                            "wider integer type first, e.g. a.long() @ b.long()") from None
