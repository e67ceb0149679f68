"""Ops that compiled graphs call: GEMM-family products and convolutions on CPU views of zynq memory, on the kernel.

`torch.compile(model, backend="pynqtorch")` lowers a graph's GEMM-family aten ops to these
(`device.compiler.LOWERINGS`), so inductor compiles the whole graph for CPU and calls the engine where the model
multiplies. A B operand (weight) that views the memory of one of the graph's zynq inputs is cached on that zynq
tensor's storage as in eager mode (`device.compiler.owner_of`); results are fresh CPU tensors. Calls the
kernel cannot take (other dtypes, transposed or 3-D convolutions) run on CPU and are counted as CPU ops.
`pynqtorch::lstm` / `pynqtorch::gru` run a recurrent layer stack as eager zynq does (`ops.recurrent.run`: the
input projection as one GEMM, one recurrent GEMM per step, weights cached).
`pynqtorch::_transformer_encoder_layer_fwd` is the fused encoder layer's math (`ops.attention`, the same as
on zynq) as a composite op: traced through, its products become `pynqtorch::gemm` calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from .device.report import record
from .device.storage import alias
from .ops._common import NotOffloadable
from .ops.attention import transformer_encoder_layer_fwd
from .ops.conv import conv2d_as_gemm
from .ops.engine_bridge import gemm as engine_gemm
from .ops.gemm import _check
from .ops.recurrent import GRU_CELL, LSTM_CELL, Cell, run, runs


def _owner(t: torch.Tensor | None) -> torch.Tensor | None:
    """The zynq tensor of the running compiled graph whose memory `t` views, with `t`'s geometry (derived-weight
    caches key on it)."""
    from .device.compiler import owner_of

    owner = owner_of(t)
    if owner is None or (owner.shape == t.shape and owner.stride() == t.stride()
                         and owner.storage_offset() == t.storage_offset() and owner.dtype == t.dtype):
        return owner
    return alias(owner, t)


# Plain library ops (not `torch.library.custom_op`, whose Python wrappers cost more per call than a small GEMM's
# host work); compiled graphs run them under no_grad (graphs needing autograd run eagerly on zynq).
_lib = torch.library.Library("pynqtorch", "DEF")
_lib.define("gemm(Tensor a, Tensor b) -> Tensor")
_lib.define("convolution(Tensor x, Tensor w, Tensor? bias, SymInt[] stride, SymInt[] padding, SymInt[] dilation, "
            "bool transposed, SymInt[] output_padding, SymInt groups) -> Tensor")


@torch.library.impl(_lib, "gemm", "CPU")
def gemm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` (``[M, K] @ [K, N]`` or ``[B, M, K] @ [B, K, N]``) on the kernel, `b` cached as a weight when it
    views a zynq input of the compiled graph."""
    t0 = time.perf_counter()
    try:
        _check(a, b)
    except NotOffloadable:
        out = torch.matmul(a, b)
        record("pynqtorch::gemm", time.perf_counter() - t0, accelerated=False)
        return out
    from .device.compiler import owner_of

    # the weight cache keys on the owner's storage and b's own geometry: any tensor of that storage will do
    out = engine_gemm(a, b, b_owner=owner_of(b)).contiguous()
    record("pynqtorch::gemm", time.perf_counter() - t0, accelerated=True)
    return out


@torch.library.register_fake("pynqtorch::gemm", lib=_lib)
def _(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # aten's own meta: CPU's shape and dtype checks, raised while the graph is compiled
    return torch.ops.aten.mm(a, b) if a.dim() == 2 else torch.ops.aten.bmm(a, b)


@torch.library.impl(_lib, "convolution", "CPU")
def convolution(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, stride: Sequence[int],
                padding: Sequence[int], dilation: Sequence[int], transposed: bool, output_padding: Sequence[int],
                groups: int) -> torch.Tensor:
    """`aten::convolution` with 1-D and 2-D convolutions on the kernel (im2col + GEMM, the weight cached)."""
    t0 = time.perf_counter()
    try:
        _check(x, w)
        if transposed or x.dim() not in (3, 4) or not x.is_floating_point():
            raise NotOffloadable("transposed, 3-D or integer convolution")
    except NotOffloadable:
        out = torch.ops.aten.convolution(x, w, bias, stride, padding, dilation, transposed, output_padding, groups)
        record("pynqtorch::convolution", time.perf_counter() - t0, accelerated=False)
        return out
    owner = _owner(w)
    if x.dim() == 3:  # conv1d as a 2-D convolution of height 1, contiguous like CPU's conv1d
        out = conv2d_as_gemm(x.unsqueeze(2), w.unsqueeze(2), owner, bias, (1, stride[0]), (0, padding[0]),
                             (1, dilation[0]), groups, channels_last=False).squeeze(2)
    else:
        out = conv2d_as_gemm(x, w, owner, bias, stride, padding, dilation, groups)
    record("pynqtorch::convolution", time.perf_counter() - t0, accelerated=True)
    return out


@torch.library.register_fake("pynqtorch::convolution", lib=_lib)
def _(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, stride: Sequence[int], padding: Sequence[int],
      dilation: Sequence[int], transposed: bool, output_padding: Sequence[int], groups: int) -> torch.Tensor:
    return torch.ops.aten.convolution(x, w, bias, stride, padding, dilation, transposed, output_padding, groups)


_lib.define(str(torch.ops.aten._transformer_encoder_layer_fwd.default._schema).removeprefix("aten::"))
_lib.impl("_transformer_encoder_layer_fwd", transformer_encoder_layer_fwd, "CompositeImplicitAutograd")


def _recurrent(op: torch._ops.OpOverload, cell: Cell) -> Callable[..., tuple]:
    """The CPU kernel of `pynqtorch::lstm` / `pynqtorch::gru` (schemas of `op`): the layer stack on the kernel with
    the weights cached on the zynq parameters they view; what eager zynq also leaves to PyTorch (training-mode
    dropout, projections, other dtypes) runs `op` on CPU and is counted as a CPU op."""
    name = f"pynqtorch::{op._schema.name.split('::')[1]}"

    def kernel(x: torch.Tensor, hx: torch.Tensor | Sequence[torch.Tensor], params: Sequence[torch.Tensor],
               has_biases: bool, num_layers: int, dropout: float, train: bool, bidirectional: bool,
               batch_first: bool) -> tuple:
        from .device.compiler import owner_of

        t0 = time.perf_counter()
        args = (x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
        states = [hx] if isinstance(hx, torch.Tensor) else list(hx)
        try:
            if not runs(x, params, has_biases, num_layers, dropout, train, bidirectional):
                raise NotOffloadable("training-mode dropout, projections or a non-float input")
            _check(x, *params)
        except NotOffloadable:
            out = op(*args)
            record(name, time.perf_counter() - t0, accelerated=False)
            return out
        out = run(x, states, params, [owner_of(p) for p in params], has_biases, num_layers, bidirectional,
                  batch_first, cell)
        record(name, time.perf_counter() - t0, accelerated=True)
        return out

    return kernel


for _op, _cell in ((torch.ops.aten.lstm.input, LSTM_CELL), (torch.ops.aten.gru.input, GRU_CELL)):
    _name = _op._schema.name.split("::")[1]
    _lib.define(str(_op._schema).replace(f"aten::{_name}.input", _name))
    _lib.impl(_name, _recurrent(_op, _cell), "CPU")
    torch.library.register_fake(f"pynqtorch::{_name}", _op, lib=_lib)  # aten's own shapes (its composite)
