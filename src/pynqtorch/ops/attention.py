"""The fused transformer fast paths, decomposed on zynq so that their GEMMs run on the kernel.

In eval mode `nn.MultiheadAttention` and `nn.TransformerEncoderLayer` call `_native_multi_head_attention` /
`_transformer_encoder_layer_fwd`, which accept PrivateUse1 tensors. Their CPU kernels would compute every
projection on CPU; these kernels compute the same math (PyTorch's `transformer.cpp` / `attention.cpp`) with
torch ops on the zynq tensors: the linear layers reach the GEMM-family kernels, the two batched products of
the attention are engine GEMMs on CPU views with the activation scheme on both operands (`sdpa.product`:
keys and values are data, not weights to cache; each counted as an accelerated `_native_multi_head_attention`),
the rest (softmax, layer norm) runs on the CPU fallback. Nested (padded-batch) inputs run on CPU as before.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from ..device.fallback import run_on_cpu
from ..device.report import record
from ..device.storage import adopt_result, cpu_view, is_zynq
from .sdpa import product

aten = torch.ops.aten
_MHA = "aten::_native_multi_head_attention"


def _matmul(a: torch.Tensor, b: torch.Tensor, scale: float = 1.0, heads_last: bool = False) -> torch.Tensor:
    """One of the attention's batched products, ``(a * scale) @ b`` for ``[B, H, T, E]`` operands: on zynq an engine
    GEMM on CPU views (`sdpa.product`), counted as the fast path's; elsewhere (the composite traced by torch.compile)
    `torch.matmul`. `heads_last`: the result laid out as ``[B, T, H, E]`` (its heads merge into ``[B, T, H*E]``
    without a copy)."""
    if not is_zynq(a):
        return torch.matmul(a if scale == 1.0 else a * scale, b)
    t0 = time.perf_counter()
    shape = (*a.shape[:-1], b.shape[-1])
    out = torch.empty(shape[0], shape[2], shape[1], shape[3]).transpose(1, 2) if heads_last else None
    out = adopt_result(product(cpu_view(a), cpu_view(b), scale, out))
    record(_MHA, time.perf_counter() - t0, accelerated=True)
    return out


# aten::_native_multi_head_attention(Tensor query, Tensor key, Tensor value, int embed_dim, int num_head,
#     Tensor qkv_weight, Tensor qkv_bias, Tensor proj_weight, Tensor proj_bias, Tensor? mask=None,
#     bool need_weights=True, bool average_attn_weights=True, int? mask_type=None) -> (Tensor, Tensor)
def native_multi_head_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, embed_dim: int,
                                num_head: int, qkv_weight: torch.Tensor, qkv_bias: torch.Tensor,
                                proj_weight: torch.Tensor, proj_bias: torch.Tensor, mask: torch.Tensor | None = None,
                                need_weights: bool = True, average_attn_weights: bool = True,
                                mask_type: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    if query.is_nested or query.dim() != 3:
        return run_on_cpu(aten._native_multi_head_attention.default,
                          (query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, proj_bias,
                           mask, need_weights, average_attn_weights, mask_type), {})
    b, t, d = query.shape
    dh = d // num_head
    wq, wk, wv = qkv_weight.split(embed_dim)
    bq, bk, bv = qkv_bias.split(embed_dim)

    def heads(x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, H, T, dh]
        return x.view(b, -1, num_head, dh).transpose(1, 2)

    q = heads(F.linear(query, wq, bq))
    k = heads(F.linear(key, wk, bk))
    v = heads(F.linear(value, wv, bv))
    scores = _matmul(q, k.transpose(-2, -1), 1.0 / math.sqrt(dh))
    if mask is None:
        attn = scores.softmax(-1)
    else:  # a non-zero mask entry masks the score out, as in PyTorch's masked_softmax
        attn = torch._masked_softmax(scores, mask if mask.dtype == torch.bool else mask.bool(), scores.dim() - 1,
                                     mask_type)
    ctx = _matmul(attn, v, heads_last=True).transpose(1, 2).reshape(b, t, d)
    out = F.linear(ctx, proj_weight, proj_bias)
    if not need_weights:
        return out, None
    return out, (attn.sum(1) / num_head if average_attn_weights else attn)


# aten::_transformer_encoder_layer_fwd(Tensor src, int embed_dim, int num_heads, Tensor qkv_weight,
#     Tensor qkv_bias, Tensor proj_weight, Tensor proj_bias, bool use_gelu, bool norm_first, float eps,
#     Tensor norm_weight_1, Tensor norm_bias_1, Tensor norm_weight_2, Tensor norm_bias_2, Tensor ffn_weight_1,
#     Tensor ffn_bias_1, Tensor ffn_weight_2, Tensor ffn_bias_2, Tensor? mask=None, int? mask_type=None) -> Tensor
def transformer_encoder_layer_fwd(src: torch.Tensor, embed_dim: int, num_heads: int, qkv_weight: torch.Tensor,
                                  qkv_bias: torch.Tensor, proj_weight: torch.Tensor, proj_bias: torch.Tensor,
                                  use_gelu: bool, norm_first: bool, eps: float, norm_weight_1: torch.Tensor,
                                  norm_bias_1: torch.Tensor, norm_weight_2: torch.Tensor,
                                  norm_bias_2: torch.Tensor, ffn_weight_1: torch.Tensor, ffn_bias_1: torch.Tensor,
                                  ffn_weight_2: torch.Tensor, ffn_bias_2: torch.Tensor,
                                  mask: torch.Tensor | None = None, mask_type: int | None = None) -> torch.Tensor:
    args = (src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, use_gelu, norm_first, eps,
            norm_weight_1, norm_bias_1, norm_weight_2, norm_bias_2, ffn_weight_1, ffn_bias_1, ffn_weight_2,
            ffn_bias_2, mask, mask_type)
    if src.is_nested or src.dim() != 3:
        return run_on_cpu(aten._transformer_encoder_layer_fwd.default, args, {})

    def norm(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (embed_dim,), w, bias, eps)

    x = norm(src, norm_weight_1, norm_bias_1) if norm_first else src
    x = native_multi_head_attention(x, x, x, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias,
                                    mask, False, True, mask_type)[0] + src
    if not norm_first:
        x = norm(x, norm_weight_1, norm_bias_1)
    residual = x
    if norm_first:
        x = norm(x, norm_weight_2, norm_bias_2)
    h = F.linear(x, ffn_weight_1, ffn_bias_1)
    x = F.linear(F.gelu(h) if use_gelu else h.relu(), ffn_weight_2, ffn_bias_2) + residual
    return x if norm_first else norm(x, norm_weight_2, norm_bias_2)


KERNELS = {
    "_native_multi_head_attention": native_multi_head_attention,
    "_transformer_encoder_layer_fwd": transformer_encoder_layer_fwd,
}
