"""A sweep of aten ops through the CPU fallback, each compared with the same call on CPU tensors.

Every case runs a function once on CPU tensors and once on zynq copies of them; the results *and the
inputs afterwards* (so in-place ops and `out=` are checked too) must be equal — exactly, since both sides
run the same CPU kernels on the same memory layout. Random ops are seeded identically on both sides (zynq
draws from the CPU generator). Where a GEMM-family op runs on the accelerator (int8-quantized), the case
compares within quantization tolerance instead. The last test counts the distinct aten ops the sweep
exercised through the report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_map

import pynqtorch

QUANT_TOL = {"atol": 0.05, "rtol": 0.05}


def make_inputs() -> dict[str, torch.Tensor]:
    """The CPU tensors cases draw from: generic, positive, unit-interval, integer, boolean, odd layouts."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 5, generator=g)
    return {
        "a": a,
        "b": torch.randn(4, 5, generator=g),
        "c": torch.randn(4, 5, generator=g),
        "p": torch.rand(4, 5, generator=g) + 0.5,           # positive
        "u": torch.rand(4, 5, generator=g) * 1.8 - 0.9,     # in (-1, 1)
        "v": torch.randn(5, generator=g),
        "i": torch.randint(-20, 20, (4, 5), generator=g),
        "j": torch.randint(1, 9, (4, 5), generator=g),
        "k": torch.randint(0, 4, (6,), generator=g),        # indices into dim 0 of a
        "m": torch.rand(4, 5, generator=g) > 0.5,
        "n": torch.randn(5, 4, generator=g).t(),            # non-contiguous 4x5
        "s": torch.tensor(1.5),                             # 0-d
        "e": torch.empty(0, 5),                             # empty
        "z": torch.randn(4, 5, dtype=torch.complex64, generator=g),
        "img": torch.randn(2, 3, 6, 6, generator=g),
        "seq": torch.randn(2, 3, 8, generator=g),
        "h": torch.randn(4, 5, generator=g).half(),
        "sorted": torch.tensor([0.5, 1.0, 2.0, 4.0]),
        "dup": torch.tensor([3, 1, 3, 2, 1, 1, 5]),
    }


Case = tuple[str, Callable[..., Any], tuple[str, ...]]


def _out(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Call `fn(*tensors, out=fresh)` with a size-0 out on the tensors' device (tests the resize path)."""
    def call(*ts: torch.Tensor) -> torch.Tensor:
        out = torch.empty(0, device=ts[0].device, dtype=ts[0].dtype)
        r = fn(*ts, out=out)
        assert r is out
        return out
    return call


def _setitem(x: torch.Tensor, idx: Any, value: Any) -> torch.Tensor:
    x[idx] = value
    return x


def _seeded(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*ts: torch.Tensor) -> Any:
        torch.manual_seed(123)
        return fn(*ts)
    return call


UNARY = ["abs", "neg", "exp", "exp2", "expm1", "sin", "cos", "tan", "atan", "sinh", "cosh", "tanh", "asinh",
         "sigmoid", "erf", "erfc", "sign", "sgn", "ceil", "floor", "round", "trunc", "frac", "relu", "square",
         "isnan", "isinf", "isfinite", "signbit", "deg2rad", "rad2deg", "i0", "sinc", "nan_to_num",
         "reciprocal", "logical_not", "clone", "lgamma"]
POSITIVE = ["log", "log2", "log10", "log1p", "sqrt", "rsqrt", "digamma", "polygamma_1"]
UNIT = ["asin", "acos", "atanh", "erfinv", "logit"]
BINARY = ["add", "sub", "mul", "div", "remainder", "fmod", "atan2", "maximum", "minimum", "fmax", "fmin",
          "hypot", "copysign", "nextafter", "xlogy", "eq", "ne", "lt", "le", "gt", "ge", "logaddexp",
          "logaddexp2", "logical_and", "logical_or", "logical_xor", "heaviside", "float_power", "true_divide",
          "floor_divide"]
INT_BINARY = ["bitwise_and", "bitwise_or", "bitwise_xor", "gcd", "lcm", "bitwise_left_shift",
              "bitwise_right_shift"]


def _unary(name: str) -> Callable[..., Any]:
    if name == "polygamma_1":
        return lambda x: torch.polygamma(1, x)
    return getattr(torch, name)


CASES: list[Case] = (
    [(f"unary.{n}", _unary(n), ("a",)) for n in UNARY]
    + [(f"unary_noncontig.{n}", _unary(n), ("n",)) for n in ("exp", "abs", "relu", "sigmoid")]
    + [(f"positive.{n}", _unary(n), ("p",)) for n in POSITIVE]
    + [(f"unit.{n}", _unary(n), ("u",)) for n in UNIT]
    + [(f"binary.{n}", getattr(torch, n), ("a", "b")) for n in BINARY]
    + [(f"int_binary.{n}", getattr(torch, n), ("i", "j")) for n in INT_BINARY]
    + [
        # unary ops in other dtypes and forms
        ("acosh", lambda p: torch.acosh(p + 1), ("p",)),
        ("bitwise_not", torch.bitwise_not, ("i",)),
        ("abs_int", torch.abs, ("i",)),
        ("half_exp", torch.exp, ("h",)),
        ("complex_angle", torch.angle, ("z",)),
        ("complex_real_imag", lambda z: (z.real * 1, z.imag * 1), ("z",)),
        ("complex_abs", torch.abs, ("z",)),
        ("complex_conj_physical", torch.conj_physical, ("z",)),
        ("complex_view_as_real", lambda z: torch.view_as_real(z) * 1, ("z",)),
        ("complex_mul", lambda z: z * z.conj(), ("z",)),
        ("round_decimals", lambda a: torch.round(a, decimals=2), ("a",)),
        ("pow_scalar", lambda a: torch.pow(a, 3), ("a",)),
        ("pow_tensor", lambda p, a: torch.pow(p, a), ("p", "a")),
        ("rsub", lambda a: 1 - a, ("a",)),
        ("sub_alpha", lambda a, b: torch.sub(a, b, alpha=0.5), ("a", "b")),
        ("div_floor", lambda a, b: torch.div(a, b, rounding_mode="floor"), ("a", "b")),
        ("div_trunc", lambda i, j: torch.div(i, j, rounding_mode="trunc"), ("i", "j")),
        ("int_true_div", lambda i, j: i / j, ("i", "j")),
        ("lerp", torch.lerp, ("a", "b", "p")),
        ("addcmul", lambda a, b, c: torch.addcmul(a, b, c, value=0.5), ("a", "b", "c")),
        ("addcdiv", lambda a, b, p: torch.addcdiv(a, b, p, value=2), ("a", "b", "p")),
        ("clamp", lambda a: torch.clamp(a, -0.5, 0.5), ("a",)),
        ("clamp_tensor", lambda a, b, c: torch.clamp(a, torch.minimum(b, c), torch.maximum(b, c)), ("a", "b", "c")),
        ("clamp_min", lambda a: a.clamp_min(0.1), ("a",)),
        ("isclose", lambda a, b: torch.isclose(a, a + b * 1e-9), ("a", "b")),
        ("where", lambda m, a, b: torch.where(m, a, b), ("m", "a", "b")),
        ("where_scalar", lambda a: torch.where(a > 0, a, 0.0), ("a",)),
        # scalar promotion, 0-d and empty tensors, mixed dtypes
        ("promote_int_float", lambda i, a: i + a, ("i", "a")),
        ("promote_int_scalar", lambda i: i * 2.5, ("i",)),
        ("promote_bool", lambda m, i: m + i, ("m", "i")),
        ("promote_half_float", lambda h, a: h * a, ("h", "a")),
        ("zero_dim_broadcast", lambda a, s: a * s + s, ("a", "s")),
        ("zero_dim_ops", lambda s: (s.exp(), s.sqrt(), s + 1, s.neg()), ("s",)),
        ("empty_ops", lambda e: (e + 1, e.sum(), e.sum(0), e.mean(1), torch.cat([e, e]), e.t()), ("e",)),
        ("broadcast_row", lambda a, v: a - v, ("a", "v")),
        # reductions
        ("sum", lambda a: (a.sum(), a.sum(1), a.sum(0, keepdim=True)), ("a",)),
        ("sum_int_dtype", lambda i: (i.sum(), i.sum(1, dtype=torch.float64)), ("i",)),
        ("mean", lambda a: (a.mean(), a.mean((0, 1)), a.mean(1)), ("a",)),
        ("prod", lambda a: (a.prod(), a.prod(1)), ("a",)),
        ("amax_amin", lambda a: (a.amax(1), a.amin(0)), ("a",)),
        ("max_min_dim", lambda a: (a.max(1), a.min(0), a.max(), a.min()), ("a",)),
        ("argmax_argmin", lambda a: (a.argmax(), a.argmin(1)), ("a",)),
        ("std_var", lambda a: (a.std(), a.var(1), a.std(0, correction=0)), ("a",)),
        ("var_mean_std_mean", lambda a: (torch.var_mean(a, 1), torch.std_mean(a)), ("a",)),
        ("norm", lambda a: (a.norm(), torch.linalg.vector_norm(a, 1, dim=1), a.norm(p=float("inf"))), ("a",)),
        ("logsumexp", lambda a: torch.logsumexp(a, 1), ("a",)),
        ("all_any", lambda m: (m.all(), m.any(1), m.all(0)), ("m",)),
        ("count_nonzero", lambda m: (torch.count_nonzero(m), torch.count_nonzero(m, 1)), ("m",)),
        ("median", lambda a: (a.median(), a.median(1)), ("a",)),
        ("nanmedian_nansum_nanmean", lambda a: (a.nanmedian(), a.nansum(1), a.nanmean()), ("a",)),
        ("mode", lambda d: torch.mode(d), ("dup",)),
        ("aminmax", lambda a: torch.aminmax(a, dim=1), ("a",)),
        ("kthvalue", lambda a: torch.kthvalue(a, 2, 1), ("a",)),
        ("quantile", lambda a: torch.quantile(a, 0.3, dim=1), ("a",)),
        ("cumsum_cumprod", lambda a: (a.cumsum(0), a.cumprod(1)), ("a",)),
        ("cummax_cummin", lambda a: (a.cummax(1), a.cummin(0)), ("a",)),
        ("logcumsumexp", lambda a: torch.logcumsumexp(a, 1), ("a",)),
        ("reduction_noncontig", lambda n: (n.sum(0), n.max(1), n.cumsum(1)), ("n",)),
        # sort / search / unique
        ("sort", lambda a: (torch.sort(a, 1), torch.sort(a, 0, descending=True)), ("a",)),
        ("argsort_msort", lambda a: (torch.argsort(a, dim=1, stable=True), torch.msort(a)), ("a",)),
        ("topk", lambda a: torch.topk(a, 3, 1), ("a",)),
        ("unique", lambda d: torch.unique(d, return_inverse=True, return_counts=True), ("dup",)),
        ("unique_consecutive", lambda d: torch.unique_consecutive(d, return_counts=True), ("dup",)),
        ("unique_dim", lambda i: torch.unique(i.remainder(2), dim=0), ("i",)),
        ("searchsorted_bucketize", lambda s, a: (torch.searchsorted(s, a), torch.bucketize(a, s)), ("sorted", "a")),
        ("histc", lambda a: torch.histc(a, bins=5, min=-2, max=2), ("a",)),
        ("bincount", lambda d: torch.bincount(d), ("dup",)),
        ("nonzero", lambda m: (torch.nonzero(m), m.nonzero(as_tuple=True)), ("m",)),
        # indexing
        ("index_tensor", lambda a, k: a[k], ("a", "k")),
        ("index_mask", lambda a, m: a[m], ("a", "m")),
        ("index_two_dims", lambda a, k: a[k, k.flip(0).remainder(5)], ("a", "k")),
        ("index_slices", lambda a: (a[1:3, ::2], a[..., -1], a[None, :, 1]), ("a",)),
        ("index_put_", lambda a, k, v: a.index_put_((k,), v), ("a", "k", "v")),
        ("index_put_accumulate", lambda a, k, v: a.index_put_((k,), v, accumulate=True), ("a", "k", "v")),
        ("setitem_mask", lambda a, m: _setitem(a, m, -1.0), ("a", "m")),
        ("setitem_slice_tensor", lambda a, v: _setitem(a, (slice(1, 3),), v), ("a", "v")),
        ("gather", lambda a, i: torch.gather(a, 1, i.remainder(5)), ("a", "i")),
        ("scatter", lambda a, i, b: torch.scatter(a, 1, i.remainder(5), b), ("a", "i", "b")),
        ("scatter_add_", lambda a, i, b: a.scatter_add_(0, i.remainder(4), b), ("a", "i", "b")),
        ("scatter_reduce", lambda a, i, b: a.scatter_reduce(1, i.remainder(5), b, "amax"), ("a", "i", "b")),
        ("scatter_value", lambda a, i: a.scatter(1, i.remainder(5), 2.0), ("a", "i")),
        ("index_select", lambda a, k: (torch.index_select(a, 0, k), a.index_select(1, k.remainder(5))), ("a", "k")),
        ("index_add", lambda a, k, b: a.index_add(0, k[:4], b, alpha=2), ("a", "k", "b")),
        ("index_copy_", lambda a, b: a.index_copy_(0, torch.tensor([3, 0], device=a.device), b[:2]), ("a", "b")),
        ("index_fill", lambda a, k: a.index_fill(1, k.remainder(5), -3.0), ("a", "k")),
        ("masked_fill", lambda a, m: (a.masked_fill(m, 0.25), a.masked_fill_(~m, -1.0)), ("a", "m")),
        ("masked_select", torch.masked_select, ("a", "m")),
        ("masked_scatter", lambda a, m, b: a.masked_scatter(m, b), ("a", "m", "b")),
        ("take", lambda a, k: (torch.take(a, k * 3), torch.take_along_dim(a, k[:4, None], 1)), ("a", "k")),
        ("put_", lambda a, k, v: a.put_(k[:5] * 2, v, accumulate=True), ("a", "k", "v")),
        ("where_one_arg", lambda m: torch.where(m), ("m",)),
        # shape, views and copies
        ("views", lambda a: (a.view(5, 4), a.reshape(-1), a.t(), a.transpose(0, 1), a.permute(1, 0),
                             a.unsqueeze(1), a.flatten(), a.unflatten(1, (5, 1)), a[None].squeeze(0),
                             a.narrow(1, 1, 3), a.select(0, 2), a.movedim(0, 1), a.expand(2, 4, 5),
                             a.unfold(1, 2, 1), a.diagonal(), a.as_strided((2, 2), (1, 3), 2), a.view_as(a)),
         ("a",)),
        ("view_of_noncontig_reshape", lambda n: (n.reshape(20), n.contiguous(), n.flatten(), n.T.view(20)), ("n",)),
        ("view_dtype", lambda a: (a.view(torch.int32) & 0xFFFF, a.view(torch.uint8) * 1), ("a",)),
        ("view_then_inplace", lambda a: a.t()[1:3].mul_(2), ("a",)),
        ("chained_view_inplace", lambda a: a.view(20)[::3].add_(1).view(-1).neg_(), ("a",)),
        ("split_chunk", lambda a: (a.split(2), a.split([1, 4], 1), a.chunk(3, 1), a.unbind(0),
                                   torch.tensor_split(a, 3, 1)), ("a",)),
        ("cat_stack", lambda a, b: (torch.cat([a, b]), torch.cat([a, b], 1), torch.stack([a, b], 2),
                                    torch.hstack([a, b]), torch.vstack([a, b]), torch.dstack([a, b])), ("a", "b")),
        ("cat_noncontig", lambda n, a: torch.cat([n, a], 1), ("n", "a")),
        ("repeat_tile", lambda a: (a.repeat(2, 1), torch.tile(a, (1, 2)), a.repeat_interleave(2, 0)), ("a",)),
        ("repeat_interleave_tensor", lambda k: torch.repeat_interleave(k.remainder(3)), ("k",)),
        ("flip_roll_rot", lambda a: (a.flip(0), a.fliplr(), torch.roll(a, 2, 1), torch.rot90(a)), ("a",)),
        ("tril_triu", lambda a: (a.tril(), a.triu(1), a.tril_(-1)), ("a",)),
        ("diag", lambda v, a: (torch.diag(v), torch.diag(a), torch.diag_embed(a), torch.trace(a)), ("v", "a")),
        ("broadcast_to", lambda v: torch.broadcast_to(v, (3, 5)) * 1, ("v",)),
        ("cross", lambda a, b: torch.linalg.cross(a[:, :3], b[:, :3]), ("a", "b")),
        ("outer_kron", lambda v: (torch.outer(v, v), torch.kron(v[:2], v[:3])), ("v",)),
        ("one_hot", lambda k: F.one_hot(k), ("k",)),
        ("fill_zero_copy", lambda a, b: (a.fill_(2.0), b.zero_(), b.copy_(a)), ("a", "b")),
        ("new_factories", lambda a: (a.new_full((2, 2), 3.0), a.new_ones(3), a.new_empty(0).numel()), ("a",)),
        ("to_dtype", lambda a, i: (a.to(torch.float64), a.to(torch.int32), i.to(torch.float16), a.bool()),
         ("a", "i")),
        ("contiguous_channels_last", lambda img: img.contiguous(memory_format=torch.channels_last) * 1, ("img",)),
        ("einsum_non_gemm", lambda a, b: (torch.einsum("ij->ji", a), torch.einsum("ij,ij->ij", a, b),
                                          torch.einsum("ii->i", a[:4, :4]), torch.einsum("ij->", a)), ("a", "b")),
        # out= variants (size-0 out is resized) and in-place variants
        ("out_add", _out(torch.add), ("a", "b")),
        ("out_exp", _out(torch.exp), ("a",)),
        ("out_sum", _out(lambda a, out: torch.sum(a, 1, out=out)), ("a",)),
        ("out_cat", _out(lambda a, b, out: torch.cat([a, b], out=out)), ("a", "b")),
        ("out_where", _out(lambda a, b, out: torch.where(a > 0, a, b, out=out)), ("a", "b")),
        ("out_clamp_noncontig", _out(lambda n, out: torch.clamp(n, 0, 1, out=out)), ("n",)),
        ("out_into_view", lambda a, b: torch.mul(a[:, :4], 2, out=b[:, 1:].t().t()), ("a", "b")),
        ("inplace_chain", lambda a, b, p: a.add_(b).mul_(2).div_(p).sub_(1).clamp_(-1, 1).abs_(), ("a", "b", "p")),
        ("inplace_unary", lambda a, p: (a.sin_(), p.log_(), a.sigmoid_(), a.relu_()), ("a", "p")),
        ("inplace_noncontig", lambda n: n.mul_(3).add_(1), ("n",)),
        ("inplace_int", lambda i, j: (i.add_(j), i.bitwise_and_(j), i.floor_divide_(j)), ("i", "j")),
        ("inplace_broadcast", lambda a, v: a.add_(v), ("a", "v")),
        # neural-network functionals
        ("softmax", lambda a: (F.softmax(a, 1), F.log_softmax(a, 0), F.softmin(a, 1)), ("a",)),
        ("layer_norm", lambda a, v: F.layer_norm(a, (5,), v, v.flip(0)), ("a", "v")),
        ("group_norm", lambda img: F.group_norm(img, 3), ("img",)),
        ("batch_norm_eval", lambda img: F.batch_norm(img, torch.zeros(3, device=img.device),
                                                     torch.ones(3, device=img.device), training=False), ("img",)),
        ("batch_norm_train", lambda img: F.batch_norm(img, torch.zeros(3, device=img.device),
                                                      torch.ones(3, device=img.device), training=True), ("img",)),
        ("instance_norm", F.instance_norm, ("img",)),
        ("local_response_norm", lambda img: F.local_response_norm(img, 2), ("img",)),
        ("normalize", lambda a: F.normalize(a, dim=1), ("a",)),
        ("activations", lambda a: (F.gelu(a), F.gelu(a, approximate="tanh"), F.silu(a), F.mish(a), F.softplus(a),
                                   F.elu(a), F.selu(a), F.celu(a), F.leaky_relu(a, 0.1), F.hardtanh(a),
                                   F.hardsigmoid(a), F.hardswish(a), F.logsigmoid(a), F.relu6(a),
                                   F.hardshrink(a), F.softshrink(a), F.tanhshrink(a), F.threshold(a, 0.1, 2.0),
                                   F.glu(a[:, :4]), F.prelu(a, torch.tensor([0.2], device=a.device)),
                                   F.rrelu(a, training=False)), ("a",)),
        ("pad", lambda img: (F.pad(img, (1, 2, 0, 1)), F.pad(img, (2, 2, 1, 1), mode="reflect"),
                             F.pad(img, (1, 1, 1, 1), mode="replicate"), F.pad(img, (1, 1, 2, 0), mode="circular"),
                             F.pad(img, (1, 1), value=-1.0)), ("img",)),
        ("pooling", lambda img: (F.max_pool2d(img, 2), F.avg_pool2d(img, 3, 1, 1), F.adaptive_avg_pool2d(img, 2),
                                 F.adaptive_max_pool2d(img, 3), F.max_pool2d(img, 2, return_indices=True),
                                 F.lp_pool2d(img.abs(), 2, 2)), ("img",)),
        ("pooling_1d", lambda seq: (F.max_pool1d(seq, 2), F.avg_pool1d(seq, 2), F.adaptive_avg_pool1d(seq, 3)),
         ("seq",)),
        ("interpolate", lambda img: (F.interpolate(img, scale_factor=2, mode="nearest"),
                                     F.interpolate(img, size=(5, 7), mode="bilinear", align_corners=False),
                                     F.interpolate(img, scale_factor=0.5, mode="area"),
                                     F.interpolate(img, size=(4, 4), mode="bicubic", align_corners=True)), ("img",)),
        ("upsample_1d", lambda seq: F.interpolate(seq, scale_factor=2, mode="linear"), ("seq",)),
        ("pixel_shuffle", lambda img: (F.pixel_shuffle(img[:, :1].repeat(1, 4, 1, 1), 2),
                                       F.pixel_unshuffle(img, 2)), ("img",)),
        ("im2col_fold", lambda img: (F.unfold(img, 2), F.fold(F.unfold(img, 2), (6, 6), 2)), ("img",)),
        ("embedding", lambda a, k: (F.embedding(k, a), F.embedding(k, a, padding_idx=0)), ("a", "k")),
        ("embedding_bag", lambda a, k: F.embedding_bag(k.view(2, 3), a, mode="mean"), ("a", "k")),
        ("dropout_eval", lambda a: (F.dropout(a, 0.5, training=False).exp(), F.alpha_dropout(a, 0.5, training=False) + a),
         ("a",)),
        ("dropout_train_seeded", _seeded(lambda a: F.dropout(a, 0.3, training=True)), ("a",)),
        ("losses", lambda a, b, k, p: (F.mse_loss(a, b), F.l1_loss(a, b, reduction="sum"), F.smooth_l1_loss(a, b),
                                       F.huber_loss(a, b), F.cross_entropy(a[:, :4].repeat(2, 1)[:6], k),
                                       F.nll_loss(F.log_softmax(a, 1)[:4], k[:4]),
                                       F.binary_cross_entropy(torch.sigmoid(a), p - 0.5),
                                       F.binary_cross_entropy_with_logits(a, p - 0.5),
                                       F.kl_div(F.log_softmax(a, 1), F.softmax(b, 1), reduction="batchmean"),
                                       F.soft_margin_loss(a, b.sign()), F.poisson_nll_loss(a, p)),
         ("a", "b", "k", "p")),
        ("distances", lambda a, b: (F.cosine_similarity(a, b), F.pairwise_distance(a, b)), ("a", "b")),
        ("nan_handling", lambda a: (torch.nan_to_num(a.log()), torch.isnan(a.sqrt()).sum(), a.log().nansum()), ("a",)),
        ("linalg", lambda p: (torch.linalg.det(p[:4, :4]), torch.linalg.inv(p[:4, :4] + 4 * torch.eye(4, device=p.device)),
                              torch.linalg.slogdet(p[:4, :4]), torch.linalg.qr(p[:4, :4]).R), ("p",)),
        # accelerated ops (GEMM family, convolutions): values within the int8 tolerance, strides exactly CPU's
        ("gemm_family", lambda a, b, n, v: (a @ b.t(), n.t() @ a, torch.addmm(b[:, :4], a, n.t()[:5, :4].t().t()),
                                            torch.bmm(a[None], b.t()[None]), a @ v, torch.dot(v, v),
                                            torch.baddbmm(a[None], a[None, :, :4], b[None, :4]), F.linear(a, b, v[:4])),
         ("a", "b", "n", "v")),
        ("conv_layouts", lambda img, seq: (
            F.conv2d(img, img[:4, :3, :3, :3]), F.conv2d(img, img.flatten()[:12].view(3, 1, 2, 2), groups=3, padding=1),
            F.conv2d(img.contiguous(memory_format=torch.channels_last), img[:4, :3, :3, :3]),
            F.conv2d(img, img[:, :, :3, :3].contiguous(memory_format=torch.channels_last)),
            F.conv2d(img[:, :1].contiguous(memory_format=torch.channels_last), img[:, :1, :3, :3]),
            F.conv2d(img.contiguous(memory_format=torch.channels_last), img.flatten()[:27].view(3, 1, 3, 3), groups=3),
            F.conv1d(seq, seq[:, :, :3]), F.conv1d(seq, seq[:, :, :2].reshape(6, 1, 2), groups=3, stride=2),
            F.conv2d(img, img[:4, :3, :3, :3]).view(2, -1)), ("img", "seq")),
        # random ops, seeded identically on both sides
        ("rand_like", _seeded(lambda a: (torch.rand_like(a), torch.randn_like(a), torch.randint_like(a, 10))), ("a",)),
        ("bernoulli", _seeded(lambda p: torch.bernoulli(p / 2)), ("p",)),
        ("normal_uniform_", _seeded(lambda a, b: (a.normal_(), b.uniform_(-1, 1))), ("a", "b")),
        ("multinomial", _seeded(lambda p: torch.multinomial(p, 3)), ("p",)),
        ("randperm_device", _seeded(lambda a: torch.randperm(7, device=a.device)), ("a",)),
        ("exponential_geometric", _seeded(lambda a, b: (a.exponential_(), b.geometric_(0.3))), ("a", "b")),
    ]
)


def _zynq(x: Any) -> Any:
    return x.to("zynq") if isinstance(x, torch.Tensor) else x


def _cpu(x: Any) -> Any:
    return x.cpu() if isinstance(x, torch.Tensor) else x


def _compare(got: Any, want: Any, exact: bool) -> None:
    if isinstance(got, torch.Tensor):
        assert got.device.type == "zynq", f"result on {got.device}, expected zynq"
    for g, w in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want), strict=True):
        if isinstance(w, torch.Tensor) and w.numel() > 1:  # CPU's layout, whichever device ran the op
            assert (g.shape, g.stride()) == (w.shape, w.stride()), "result layout differs from CPU's"
    got = tree_map(_cpu, got)
    if exact:
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    else:
        torch.testing.assert_close(got, want, equal_nan=True, **QUANT_TOL)


def run_case(fn: Callable[..., Any], names: tuple[str, ...]) -> dict[str, int]:
    """Run `fn` on CPU and zynq inputs, compare results and inputs afterwards; return the ops it exercised."""
    cpu_in = [make_inputs()[n] for n in names]
    zynq_in = [t.to("zynq") for t in cpu_in]
    for z, c in zip(zynq_in, cpu_in):
        assert z.stride() == c.stride()
    want = fn(*cpu_in)
    pynqtorch.reset_report()
    got = fn(*zynq_in)
    rep = pynqtorch.report()
    exact = not rep.accelerated
    for leaf in torch.utils._pytree.tree_leaves(got):
        if isinstance(leaf, torch.Tensor):
            assert leaf.device.type == "zynq", f"result on {leaf.device}"
    _compare(got, want, exact)
    for z, c in zip(zynq_in, cpu_in):
        _compare(z, c, exact)
    return {**{k: v.calls for k, v in rep.cpu.items()}, **{k: v.calls for k, v in rep.accelerated.items()}}


@pytest.mark.parametrize("fn, names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_op_matches_cpu(fn: Callable[..., Any], names: tuple[str, ...]) -> None:
    ops = run_case(fn, names)
    assert ops, "the case exercised no zynq op"


def test_sweep_covers_at_least_150_distinct_aten_ops() -> None:
    seen: set[str] = set()
    for _, fn, names in CASES:
        seen.update(run_case(fn, names))
    print(f"op sweep: {len(CASES)} cases, {len(seen)} distinct aten ops")
    assert len(seen) >= 150, sorted(seen)
