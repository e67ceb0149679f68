"""The im2col matrix of a 2-D convolution as an engine A operand that need not exist in float.

`Patches` describes the matrix ``[groups, N*OH*OW, kh*kw*Cg]`` (one row per output position, K ordered
(kh, kw, c), zero outside the input) without building it: the engine quantizes it straight from the input
with the native host pass (`hostops.im2col_quantize`), which is what a convolution costs most on the host.
`materialize()` builds the float matrix for everything else (torch quantization, non-finite rows, float64).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Patches:
    """Windows of input `x` (``[N, C, H, W]``, CPU, float) for a 2-D convolution; all pairs are (h, w)."""

    x: torch.Tensor
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    out: tuple[int, int]

    @functools.cached_property
    def shape(self) -> torch.Size:
        n, c = self.x.shape[:2]
        return torch.Size((self.groups, n * self.out[0] * self.out[1],
                           self.kernel[0] * self.kernel[1] * (c // self.groups)))

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype

    @property
    def requires_grad(self) -> bool:
        return self.x.requires_grad

    def gather_layout(self) -> torch.Tensor:
        """`x` as ``[N, H, W, C]`` for the native pass: channels contiguous (a copy only if they are not) for a
        plain convolution, whose windows are runs of pixels × channels; any layout for a grouped one, whose
        windows read few channels each (a depthwise window stays in one channel plane)."""
        xh = self.x.permute(0, 2, 3, 1)
        if self.groups > 1 or xh.stride(-1) == 1 or xh.shape[-1] == 1:
            return xh
        return xh.contiguous()

    def geometry(self, xh: torch.Tensor) -> list[int]:
        """The layout numbers of the native pass (see ``pynqtorch_im2col_quantize``) for ``xh =
        gather_layout()``."""
        n, h, w, c = xh.shape
        return [n, c, h, w, xh.stride(0), xh.stride(1), xh.stride(2), self.groups, *self.kernel, *self.stride,
                *self.padding, *self.dilation, *self.out, xh.stride(3)]

    def position_walk(self) -> tuple[torch.Tensor, list[int]] | None:
        """The input and layout numbers for the native pass that walks output positions
        (``pynqtorch_im2col_quantize_runs``) where it beats gathering rows: a plain convolution with one input
        channel, or with a 1x1 kernel over an input whose channels are not contiguous (no channels-last copy
        then); None otherwise. A 1x1 kernel of stride 1 without padding over whole planes reads each image as one
        row of H*W pixels."""
        (kh, kw), c = self.kernel, self.x.shape[1]
        xh = self.x.permute(0, 2, 3, 1)
        if self.groups != 1 or not (c == 1 or (kh == kw == 1 and xh.stride(-1) != 1)):
            return None
        geo = self.geometry(xh)
        h, w = xh.shape[1:3]
        if kh == kw == 1 and self.stride == (1, 1) and self.padding == (0, 0) and xh.stride(1) == w * xh.stride(2):
            geo[2:4], geo[16:18] = [1, h * w], [1, h * w]  # height 1, width H*W: one line per image
        return xh, geo

    def materialize(self) -> torch.Tensor:
        """The float matrix: one padded channels-last copy, then one copy of all windows."""
        (kh, kw), (oh, ow), groups = self.kernel, self.out, self.groups
        n, c = self.x.shape[:2]
        cg = c // groups
        xh = self.x.permute(0, 2, 3, 1)
        if self.padding[0] or self.padding[1]:
            ph, pw = self.padding
            xh = torch.constant_pad_nd(xh, (0, 0, pw, pw, ph, ph))
        sn, sh, sw, sc = xh.stride()
        windows = xh.as_strided(
            (groups, n, oh, ow, kh, kw, cg),
            (cg * sc, sn, sh * self.stride[0], sw * self.stride[1], sh * self.dilation[0], sw * self.dilation[1], sc),
            xh.storage_offset())
        return windows.reshape(groups, n * oh * ow, kh * kw * cg)
