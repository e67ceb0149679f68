"""Fused LSTM/GRU cell kernels, computed on CPU views.

PyTorch's `lstm`/`gru` call the fused cells `_thnn_fused_lstm_cell` / `_thnn_fused_gru_cell` (and their
backward) for every non-CPU device, but ships them for CUDA only, so the plain CPU fallback cannot run
them. These kernels compute the same thing with CPU ops, with the CUDA kernels' workspace layout
(LSTM: activated i, f, g, o gates; GRU: r, z, n gates, h, and the hidden candidate before gating).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from . import report
from .storage import adopt_result, cpu_view


def _cpu(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else cpu_view(t)


def _counted(name: str, fn: Callable[..., tuple]) -> Callable[..., tuple]:
    def kernel(*args: Any) -> tuple:
        t0 = time.perf_counter()
        out = fn(*(_cpu(a) if isinstance(a, torch.Tensor) else a for a in args))
        res = tuple(adopt_result(o) if isinstance(o, torch.Tensor) else o for o in out)
        report.record(name, time.perf_counter() - t0, accelerated=False)
        return res
    return kernel


def _gates(input_gates: torch.Tensor, hidden_gates: torch.Tensor, input_bias: torch.Tensor | None,
           hidden_bias: torch.Tensor | None) -> torch.Tensor:
    gates = input_gates + hidden_gates
    if input_bias is not None:
        gates = gates + input_bias + hidden_bias
    return gates


# aten::_thnn_fused_lstm_cell(Tensor input_gates, Tensor hidden_gates, Tensor cx, Tensor? input_bias=None,
#                             Tensor? hidden_bias=None) -> (Tensor, Tensor, Tensor)
def lstm_cell(input_gates: torch.Tensor, hidden_gates: torch.Tensor, cx: torch.Tensor,
              input_bias: torch.Tensor | None = None, hidden_bias: torch.Tensor | None = None) -> tuple:
    i, f, g, o = _gates(input_gates, hidden_gates, input_bias, hidden_bias).chunk(4, 1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    cy = f * cx + i * g
    hy = o * cy.tanh()
    return hy, cy, torch.cat([i, f, g, o], 1)


# aten::_thnn_fused_lstm_cell_backward_impl(Tensor? grad_hy, Tensor? grad_cy, Tensor cx, Tensor cy,
#                                           Tensor workspace, bool has_bias) -> (Tensor, Tensor, Tensor)
def lstm_cell_backward(grad_hy: torch.Tensor | None, grad_cy: torch.Tensor | None, cx: torch.Tensor,
                       cy: torch.Tensor, workspace: torch.Tensor, has_bias: bool) -> tuple:
    i, f, g, o = workspace.chunk(4, 1)
    grad_hy = torch.zeros_like(cy) if grad_hy is None else grad_hy
    tanh_cy = cy.tanh()
    grad_o = grad_hy * tanh_cy * o * (1 - o)
    grad_c = grad_hy * o * (1 - tanh_cy * tanh_cy)
    if grad_cy is not None:
        grad_c = grad_c + grad_cy
    grad_i = grad_c * g * i * (1 - i)
    grad_f = grad_c * cx * f * (1 - f)
    grad_g = grad_c * i * (1 - g * g)
    grad_gates = torch.cat([grad_i, grad_f, grad_g, grad_o], 1)
    return grad_gates, grad_c * f, grad_gates.sum(0) if has_bias else None


# aten::_thnn_fused_gru_cell(Tensor input_gates, Tensor hidden_gates, Tensor hx, Tensor? input_bias=None,
#                            Tensor? hidden_bias=None) -> (Tensor, Tensor)
def gru_cell(input_gates: torch.Tensor, hidden_gates: torch.Tensor, hx: torch.Tensor,
             input_bias: torch.Tensor | None = None, hidden_bias: torch.Tensor | None = None) -> tuple:
    ir, ii, in_ = input_gates.chunk(3, 1)
    hr, hi, hn = hidden_gates.chunk(3, 1)
    if input_bias is not None:
        b1r, b1i, b1n = input_bias.chunk(3)
        b2r, b2i, b2n = hidden_bias.chunk(3)
        ir, ii, in_ = ir + b1r, ii + b1i, in_ + b1n
        hr, hi, hn = hr + b2r, hi + b2i, hn + b2n
    r = (ir + hr).sigmoid()
    z = (ii + hi).sigmoid()
    n = (in_ + r * hn).tanh()
    hy = n + z * (hx - n)
    return hy, torch.cat([r, z, n, hx, hn], 1)


# aten::_thnn_fused_gru_cell_backward(Tensor grad_hy, Tensor workspace, bool has_bias)
#     -> (Tensor, Tensor, Tensor, Tensor, Tensor)
def gru_cell_backward(grad_hy: torch.Tensor, workspace: torch.Tensor, has_bias: bool) -> tuple:
    r, z, n, hx, hn = workspace.chunk(5, 1)
    grad_z = grad_hy * (hx - n) * z * (1 - z)
    grad_hx = grad_hy * z
    grad_in = grad_hy * (1 - z) * (1 - n * n)
    grad_hn = grad_in * r
    grad_r = grad_in * hn * r * (1 - r)
    grad_input_gates = torch.cat([grad_r, grad_z, grad_in], 1)
    grad_hidden_gates = torch.cat([grad_r, grad_z, grad_hn], 1)
    if not has_bias:
        return grad_input_gates, grad_hidden_gates, grad_hx, None, None
    return (grad_input_gates, grad_hidden_gates, grad_hx, grad_input_gates.sum(0), grad_hidden_gates.sum(0))


KERNELS = {
    "_thnn_fused_lstm_cell": _counted("aten::_thnn_fused_lstm_cell", lstm_cell),
    "_thnn_fused_lstm_cell_backward_impl": _counted("aten::_thnn_fused_lstm_cell_backward_impl",
                                                    lstm_cell_backward),
    "_thnn_fused_gru_cell": _counted("aten::_thnn_fused_gru_cell", gru_cell),
    "_thnn_fused_gru_cell_backward": _counted("aten::_thnn_fused_gru_cell_backward", gru_cell_backward),
}
