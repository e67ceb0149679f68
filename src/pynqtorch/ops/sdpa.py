"""`scaled_dot_product_attention` on zynq as PyTorch's *overrideable* SDPA backend: both products on the kernel.

PyTorch asks a device which SDPA implementation to run through a C++ DispatchStub; the native runtime
(`device/native.cpp`) forwards that question to the zynq kernel of `aten::_fused_sdp_choice` here. It
answers `SDPBackend.OVERRIDEABLE` for the cases this module computes exactly as ATen's math path does (no
gradients needed, no dropout, float32, dense 3-D/4-D inputs of one batch, a mask that broadcasts to the
scores, a softmax not selected for a rows kernel), and `SDPBackend.MATH` otherwise, so training, dropout,
an offloaded softmax and unusual inputs keep PyTorch's own decomposition.
`aten::_scaled_dot_product_fused_attention_overrideable` then computes, on CPU views,
``softmax(q @ k^T * scale + mask) @ v`` with both products as batched engine GEMMs (activation scheme for
both operands) and the softmax of the math path (`_safe_softmax`: a row whose scores are all -inf gives 0),
and returns the logsumexp the schema demands. Without the native runtime the math path serves.
"""

from __future__ import annotations

import functools
import math
import time

import torch
from torch.nn.attention import SDPBackend

from .. import engine
from ..device.report import record
from ..device.storage import adopt_result, is_zynq
from ..targets import registry
from . import blockops
from ._common import to_cpu, traced
from .engine_bridge import gemm

aten = torch.ops.aten
MATH, OVERRIDEABLE = int(SDPBackend.MATH), int(SDPBackend.OVERRIDEABLE)
_NAME = "_scaled_dot_product_fused_attention_overrideable"
_QUALIFIED = f"aten::{_NAME}"
_SOFTMAX = "aten::_softmax"


def _broadcasts_into(mask: torch.Tensor, shape: torch.Size) -> bool:
    """Whether `mask` broadcasts to `shape` without enlarging it (so it can be added to scores in place)."""
    return mask.dim() <= len(shape) and all(m in (1, s) for m, s in zip(reversed(mask.shape), reversed(shape)))


def math_reason(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None,
                dropout_p: float, is_causal: bool, enable_gqa: bool) -> str | None:
    """Why this SDPA call takes ATen's math path rather than the kernel's (None: the kernel's)."""
    tensors = (query, key, value) if attn_mask is None else (query, key, value, attn_mask)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return "gradients needed"
    if dropout_p > 0:
        return "dropout"
    if _SOFTMAX in blockops.registered() and registry.active().offload.selects(_SOFTMAX):
        return "softmax offloaded"  # the math path's `_softmax` runs on the rows kernel selected for it
    if any(t.is_nested or not is_zynq(t) or t.layout != torch.strided for t in tensors):
        return "not dense zynq tensors"
    if query.dtype != torch.float32 or key.dtype != query.dtype or value.dtype != query.dtype:
        return f"dtype {query.dtype}"
    if query.dim() not in (3, 4) or key.dim() != query.dim() or value.dim() != query.dim():
        return "not 3-D or 4-D"
    if query.shape[:-3] != key.shape[:-3] or key.shape[:-1] != value.shape[:-1] or key.shape[-1] != query.shape[-1]:
        return "batch or sequence shapes differ"
    hq, hk = query.shape[-3], key.shape[-3]
    if hq != hk and not (enable_gqa and hq % hk == 0):
        return "heads differ"
    if 0 in (*query.shape, *key.shape, value.shape[-1]):
        return "empty"
    if attn_mask is not None:
        scores = (*query.shape[:-1], key.shape[-2])
        if is_causal or not _broadcasts_into(attn_mask, torch.Size(scores)):
            return "mask shape"
    return None


# aten::_fused_sdp_choice(Tensor query, Tensor key, Tensor value, Tensor? attn_mask=None, float dropout_p=0.,
#     bool is_causal=False, *, float? scale=None, bool enable_gqa=False) -> int
def fused_sdp_choice(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False, *,
                     scale: float | None = None, enable_gqa: bool = False) -> int:
    """The SDPA backend for zynq tensors: overrideable (this module) when `math_reason` finds none, else math."""
    reason = math_reason(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    return OVERRIDEABLE if reason is None else MATH


@functools.lru_cache(maxsize=64)
def _above_diagonal(length: int, source: int) -> torch.Tensor:
    """The entries `is_causal` masks out of ``[L, S]`` scores (the math path's ``ones(L, S).tril()``, negated)."""
    return torch.ones(length, source, dtype=torch.bool).triu_(1)


def _matching_layout(query: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """An empty result of `shape` in `query`'s dim order (the op's meta kernel's layout)."""
    if tuple(query.shape) == shape:
        return torch.empty_like(query)
    order = sorted(range(query.dim()), key=lambda d: query.stride(d), reverse=True)
    strides, stride = [0] * len(shape), 1
    for d in reversed(order):
        strides[d] = stride
        stride *= shape[d]
    return torch.empty_strided(shape, strides, dtype=query.dtype)


def _stack(x: torch.Tensor) -> torch.Tensor:
    """``[..., R, C]`` as ``[B, R, C]``: a view when the batch dims merge, else a copy that keeps which of the
    last two dims is contiguous (a transposed key stays column-major, which its per-column quantization reads
    fastest)."""
    if x.stride(-2) == 1 and x.stride(-1) != 1:
        return x.transpose(-2, -1).reshape(-1, x.shape[-1], x.shape[-2]).transpose(1, 2)
    return x.reshape(-1, x.shape[-2], x.shape[-1])


def product(a: torch.Tensor, b: torch.Tensor, scale: float = 1.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """``(a * scale) @ b`` for CPU tensors ``[..., M, K]`` and ``[..., K, N]`` of one batch shape (3-D or 4-D): one
    batched engine GEMM with the activation scheme on both operands (`b` is data, not a weight to cache), in one
    native pass per product reading the operands where they lie when the engine takes it (`engine.activation_gemm`);
    written into `out` if given."""
    c = engine.activation_gemm(a, b, scale=scale, out=out)
    if c is not None:
        return c
    a = a if scale == 1.0 else a * scale
    c = gemm(_stack(a), _stack(b), b_owner=None).view(*a.shape[:-1], b.shape[-1])
    return c if out is None else out.copy_(c)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, dropout_p: float,
              is_causal: bool, scale: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and logsumexp of ``softmax(q @ k^T * scale + bias) @ v`` on CPU tensors (3-D ``[H, L, E]`` or 4-D
    ``[B, H, L, E]``; k/v heads dividing q's are repeated, as `enable_gqa` does)."""
    if not q.dtype.is_floating_point:
        raise NotImplementedError(f"{_NAME}: expected floating-point query, key and value, got {q.dtype}")
    if q.dim() not in (3, 4) or k.dim() != q.dim() or v.dim() != q.dim():
        raise RuntimeError(f"{_NAME}: query, key and value must all be 3-D or all 4-D, got "
                           f"{q.dim()}-D, {k.dim()}-D and {v.dim()}-D")
    hq, hk = q.shape[-3], k.shape[-3]
    if hk != hq:
        if hk == 0 or hq % hk or v.shape[-3] != hk:
            raise RuntimeError(f"{_NAME}: {hq} query heads cannot attend to {hk} key and {v.shape[-3]} value heads")
        k, v = k.repeat_interleave(hq // hk, -3), v.repeat_interleave(hq // hk, -3)
    lead, (length, e), source, ev = q.shape[:-2], q.shape[-2:], k.shape[-2], v.shape[-1]
    scale = 1.0 / math.sqrt(e) if scale is None else scale
    # Per-row scales make q * scale quantize to q's integers: the product is the math path's (q√s)(k√s)^T.
    s = product(q, k.transpose(-2, -1), scale)
    if is_causal:
        s.masked_fill_(_above_diagonal(length, source), -math.inf)
    if bias is not None:
        if bias.dtype == torch.bool:
            s.masked_fill_(bias.logical_not(), -math.inf)
        else:
            s.add_(bias)
    m = s.amax(-1, keepdim=True)
    p = torch.softmax(s, -1)
    dead = m == -math.inf  # rows with every score -inf: 0, as the math path's _safe_softmax gives
    any_dead = bool(dead.any())
    if any_dead:
        p.masked_fill_(dead, 0.0)
    lse = m.sub_(p.amax(-1, keepdim=True).log_())  # m + log(sum(exp(s - m))): the largest p is 1 / sum
    if any_dead:
        lse.masked_fill_(dead, -math.inf)
    if dropout_p > 0:
        p = torch.dropout(p, dropout_p, True)
    out = product(p, v, out=_matching_layout(q, (*lead, length, ev)))
    return out, lse.view(lead.numel() // hq, hq, length).float()


# aten::_scaled_dot_product_fused_attention_overrideable(Tensor query, Tensor key, Tensor value,
#     Tensor? attn_bias=None, float dropout_p=0., bool is_causal=False, bool return_debug_mask=False, *,
#     float? scale=None) -> (Tensor output, Tensor logsumexp, Tensor cum_seq_q, Tensor cum_seq_k, SymInt max_q,
#     SymInt max_k, Tensor philox_seed, Tensor philox_offset, Tensor debug_attn_mask)
def scaled_dot_product_fused_attention_overrideable(
        query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_bias: torch.Tensor | None = None,
        dropout_p: float = 0.0, is_causal: bool = False, return_debug_mask: bool = False, *,
        scale: float | None = None) -> tuple:
    """The overrideable SDPA backend on zynq: `attention` on CPU views; the varlen and philox outputs as the
    op's meta kernel gives them (no cumulative sequence lengths, 0-dim seed and offset, no debug mask)."""
    t0 = time.perf_counter()
    out, lse = traced(_QUALIFIED, attention, to_cpu(query), to_cpu(key), to_cpu(value), to_cpu(attn_bias), dropout_p,
                      is_causal, scale)
    seed, offset = (adopt_result(torch.zeros((), dtype=torch.int64)) for _ in range(2))
    result = (adopt_result(out), adopt_result(lse), None, None, query.shape[-2], key.shape[-2], seed, offset, None)
    record(_QUALIFIED, time.perf_counter() - t0, accelerated=True)
    return result


KERNELS = {
    "_fused_sdp_choice": fused_sdp_choice,
    _NAME: scaled_dot_product_fused_attention_overrideable,
}
