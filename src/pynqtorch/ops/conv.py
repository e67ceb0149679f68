"""Convolution lowered to GEMM: the im2col matrix of the input (`engine.Patches`) times the weight matrix, per group.

`aten::convolution` reaches `convolution_overrideable` for PrivateUse1 tensors. 1-D and 2-D convolutions
of any stride, padding, dilation and groups (depthwise included) run on the kernel; transposed and 3-D
convolutions go to the CPU fallback, counted. The backward runs on CPU (`convolution_backward`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch._prims_common import suggest_memory_format

from ..device.fallback import run_on_cpu
from ..device.storage import cpu_view, is_zynq
from ..hostops.patches import Patches
from ._common import NotOffloadable, accelerated, to_cpu
from .engine_bridge import depthwise_derived, gemm_derived
from .gemm import _check

aten = torch.ops.aten


def _weight_matrix(w: torch.Tensor, groups: int) -> torch.Tensor:
    """Weight [O, Cg, kh, kw] as the B operand [groups, kh*kw*Cg, Og] ([kh*kw*Cg, O] ungrouped): K ordered
    (kh, kw, c) like the im2col rows."""
    o, cg, kh, kw = w.shape
    b = (w.reshape(groups, o // groups, cg, kh, kw).permute(0, 3, 4, 2, 1)
         .reshape(groups, kh * kw * cg, o // groups))
    return b if groups > 1 else b[0]


def conv2d_as_gemm(x: torch.Tensor, w: torch.Tensor, w_owner: torch.Tensor | None, bias: torch.Tensor | None,
                   stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], groups: int,
                   matmul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                   channels_last: bool | None = None) -> torch.Tensor:
    """2-D convolution of CPU tensors as im2col + GEMM (activations as A, weights as the cached B, owned by
    `w_owner`). `w` may be the zynq weight itself: its CPU view is then taken only to make the reordered copy.

    The result has CPU's layout: channels-last when the input or the weight suggests it (torch's
    `suggest_memory_format`), contiguous otherwise; `channels_last` overrides the choice.

    The engine computes the (batched) products unless a test passes `matmul(a, b)` with exact float64
    arithmetic to check the lowering alone.
    """
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if c != cg * groups:
        raise RuntimeError(f"Given groups={groups}, weight of size {list(w.shape)}, expected input"
                           f"{list(x.shape)} to have {cg * groups} channels, but got {c} channels instead")
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if oh <= 0 or ow <= 0:
        raise RuntimeError(f"Calculated output size: ({o}x{oh}x{ow}). Output size is too small")
    # The engine quantizes the patch matrix straight from the input (`Patches`); only the exact test path
    # builds it in float. K is ordered (kh, kw, c) on both sides (channels-last windows); the integer
    # accumulator is exact in any order and the row/column scales see the same values, so results equal the
    # (c, kh, kw) ordering bit for bit. The reordered weight is a copy, kept per weight view and write
    # generation (`gemm_derived`) together with its quantization.
    a = Patches(x, (kh, kw), (stride[0], stride[1]), (padding[0], padding[1]), (dilation[0], dilation[1]), groups,
                (oh, ow))
    if channels_last is None:
        channels_last = channels_last_output(x, w)
    key, make = ("conv2d", groups), lambda: _weight_matrix(cpu_view(w) if is_zynq(w) else w, groups)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if matmul is not None:
        m = a.materialize()
        out = matmul(m if groups > 1 else m[0], make())
    else:
        # Depthwise (one input channel per group): the whole convolution below in one pass where the engine takes it.
        res = depthwise_derived(a, w_owner, key, make, bias, channels_last) if cg == 1 else None
        if res is not None:
            return res
        if groups == 1:  # the engine writes the [N*OH*OW, O] product into the result's layout, with the bias
            result = torch.empty((n, o, oh, ow), dtype=x.dtype, memory_format=fmt)
            sn, so, _, sw = result.stride()  # [N, OH*OW, O]: an image's positions are one run (sh == ow * sw)
            gemm_derived(a, w_owner, key, make, bias=bias, out=result.as_strided((n, oh * ow, o), (sn, sw, so)))
            return result
        out = gemm_derived(a, w_owner, key, make)
    og = o // groups
    if groups == 1 and channels_last:  # the [N*OH*OW, O] product is the channels-last result already
        return (out if bias is None else out.add_(bias)).reshape(n, oh, ow, o).permute(0, 3, 1, 2)
    # [G, N*OH*OW, Og] (or [N*OH*OW, O]) as [N, G, Og, OH, OW], copied into the result with the bias in one pass
    result = torch.empty((n, o, oh, ow), dtype=out.dtype, memory_format=fmt)
    prod, dst = out.reshape(groups, n, oh, ow, og).permute(1, 0, 4, 2, 3), result.view(n, groups, og, oh, ow)
    if bias is None:
        dst.copy_(prod)
    else:
        torch.add(prod, bias.view(1, groups, og, 1, 1), out=dst)
    return result


def channels_last_output(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether CPU's 2-D convolution returns channels-last for input `x` and weight `w` (a function of their
    geometry, remembered: torch's `suggest_memory_format` is Python, ~10 µs a call)."""
    return _channels_last(x.shape, x.stride(), w.shape, w.stride())


@functools.lru_cache(maxsize=1024)
def _channels_last(x_shape: torch.Size, x_stride: tuple[int, ...], w_shape: torch.Size,
                   w_stride: tuple[int, ...]) -> bool:
    x, w = (torch.empty_strided(s, st, device="meta") for s, st in ((x_shape, x_stride), (w_shape, w_stride)))
    return torch.channels_last in (suggest_memory_format(x), suggest_memory_format(w))


# aten::convolution_overrideable(Tensor input, Tensor weight, Tensor? bias, SymInt[] stride, SymInt[] padding,
#     SymInt[] dilation, bool transposed, SymInt[] output_padding, SymInt groups) -> Tensor
@accelerated(aten.convolution_overrideable.default, cpu_op=aten.convolution.default)
def convolution_overrideable(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                             transposed: bool, output_padding: Sequence[int], groups: int) -> torch.Tensor:
    _check(input, weight)
    if transposed or input.dim() not in (3, 4) or not input.is_floating_point():
        raise NotOffloadable("transposed, 3-D or integer convolution")
    x, b = to_cpu(input), to_cpu(bias)
    w = weight if is_zynq(weight) else to_cpu(weight)  # a CPU weight raises; a zynq one is viewed only when copied
    if x.dim() == 3:  # conv1d as a 2-D convolution of height 1
        out = conv2d_as_gemm(x.unsqueeze(2), to_cpu(weight).unsqueeze(2), weight, b, (1, stride[0]), (0, padding[0]),
                             (1, dilation[0]), groups, channels_last=False)  # CPU's conv1d: contiguous
        return out.squeeze(2)
    return conv2d_as_gemm(x, w, weight, b, stride, padding, dilation, groups)


# aten::convolution_backward_overrideable(Tensor grad_output, Tensor input, Tensor weight, SymInt[] stride,
#     SymInt[] padding, SymInt[] dilation, bool transposed, SymInt[] output_padding, SymInt groups,
#     bool[3] output_mask) -> (Tensor grad_input, Tensor grad_weight, Tensor grad_bias)
def convolution_backward_overrideable(grad_output, input, weight, stride, padding, dilation, transposed,
                                      output_padding, groups, output_mask):
    """Gradients on CPU through PyTorch's own `convolution_backward` (the fallback maps results back)."""
    bias_sizes = [weight.shape[1] * groups if transposed else weight.shape[0]]
    return run_on_cpu(aten.convolution_backward.default,
                      (grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
                       output_padding, groups, output_mask), {})


KERNELS = [convolution_overrideable]
BACKWARD = {"convolution_backward_overrideable": convolution_backward_overrideable}
