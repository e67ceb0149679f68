"""LSTM and GRU layers on the kernel: the input projection of the whole sequence as one GEMM, then only the
recurrent GEMM per step.

PyTorch's composite `lstm`/`gru` precompute the input projection on CPU only; on other devices every step
issues two GEMMs and a fused cell through the dispatcher. These kernels take `aten::lstm.input` and
`aten::gru.input` at the autograd key of zynq: with gradients needed, for projections (`proj_size`) and for
training-mode dropout they run PyTorch's own composite (`OpOverload.decompose`), so autograd sees the usual
graph; otherwise they compute on CPU views with the engine. Per-row activation scales make the sequence's
input projection bit-identical to the per-step one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from ..device.report import record
from ..device.storage import adopt_result
from ._common import NotOffloadable, to_cpu
from .engine_bridge import gemm
from .gemm import _check

aten = torch.ops.aten
Cell = Callable[[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]


def _lstm_cell(gx: torch.Tensor, gh: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    i, f, g, o = gh.add_(gx).chunk(4, 1)
    c = torch.sigmoid(f).mul_(state[1]).addcmul_(torch.sigmoid(i), torch.tanh(g))
    return torch.sigmoid(o).mul_(torch.tanh(c)), c


def _gru_cell(gx: torch.Tensor, gh: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    xr, xz, xn = gx.chunk(3, 1)
    hr, hz, hn = gh.chunk(3, 1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(hn.mul_(r).add_(xn))
    return (state[0] - n).mul_(z).add_(n),


def _direction(x: torch.Tensor, state: tuple[torch.Tensor, ...], w: Sequence[torch.Tensor], cell: Cell,
               reverse: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One layer in one direction over sequence-major CPU `x` ``[T, B, I]``; `w` are the zynq parameters
    (w_ih, w_hh[, b_ih, b_hh])."""
    t_len, batch = x.shape[:2]
    w_ih, w_hh = w[0], w[1]
    gx = gemm(x.reshape(t_len * batch, -1), to_cpu(w_ih).t(), b_owner=w_ih)
    b_hh = None
    if len(w) == 4:
        gx.add_(to_cpu(w[2]))
        b_hh = to_cpu(w[3])
    gx = gx.view(t_len, batch, -1)
    w_hh_t = to_cpu(w_hh).t()
    outs = []
    for t in (range(t_len - 1, -1, -1) if reverse else range(t_len)):
        gh = gemm(state[0], w_hh_t, b_owner=w_hh)
        if b_hh is not None:
            gh.add_(b_hh)
        state = cell(gx[t], gh, state)
        outs.append(state[0])
    if reverse:
        outs.reverse()
    return torch.stack(outs), state


def _run(x: torch.Tensor, hx: Sequence[torch.Tensor], params: Sequence[torch.Tensor], has_biases: bool,
         num_layers: int, bidirectional: bool, batch_first: bool, cell: Cell) -> tuple[torch.Tensor, ...]:
    dirs = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    seq = to_cpu(x)
    if batch_first:
        seq = seq.transpose(0, 1)
    states = [to_cpu(h) for h in hx]
    finals: list[list[torch.Tensor]] = [[] for _ in states]
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            idx = layer * dirs + d
            out, st = _direction(seq, tuple(s[idx] for s in states), params[idx * per:(idx + 1) * per], cell,
                                 reverse=d == 1)
            outs.append(out)
            for f, s in zip(finals, st, strict=True):
                f.append(s)
        seq = outs[0] if dirs == 1 else torch.cat(outs, 2)
    output = seq.transpose(0, 1) if batch_first else seq
    return (output, *(torch.stack(f) for f in finals))


def _accelerated(op: torch._ops.OpOverload, cell: Cell, n_state: int) -> Callable[..., tuple]:
    name = f"{op._schema.name}.{op._schema.overload_name}"

    def kernel(x: torch.Tensor, hx: torch.Tensor | Sequence[torch.Tensor], params: Sequence[torch.Tensor],
               has_biases: bool, num_layers: int, dropout: float, train: bool, bidirectional: bool,
               batch_first: bool) -> tuple:
        args = (x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
        states = list(hx) if n_state > 1 else [hx]
        tensors = [x, *states, *params]
        dirs = 2 if bidirectional else 1
        if (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)) or (train and dropout > 0) \
                or len(params) != num_layers * dirs * (4 if has_biases else 2) \
                or not all(t.device.type == "zynq" for t in tensors) or x.dim() != 3 \
                or not x.is_floating_point():
            return op.decompose(*args)
        t0 = time.perf_counter()
        try:
            _check(x, *params)
        except NotOffloadable:
            return op.decompose(*args)
        out = _run(x, states, params, has_biases, num_layers, bidirectional, batch_first, cell)
        result = tuple(adopt_result(o) for o in out)
        record(name, time.perf_counter() - t0, accelerated=True)
        return result

    return kernel


# aten::lstm.input(Tensor input, Tensor[] hx, Tensor[] params, bool has_biases, int num_layers, float dropout,
#     bool train, bool bidirectional, bool batch_first) -> (Tensor, Tensor, Tensor)
# aten::gru.input(Tensor input, Tensor hx, Tensor[] params, bool has_biases, int num_layers, float dropout,
#     bool train, bool bidirectional, bool batch_first) -> (Tensor, Tensor)
AUTOGRAD_KERNELS = {"lstm.input": _accelerated(aten.lstm.input, _lstm_cell, 2),
                    "gru.input": _accelerated(aten.gru.input, _gru_cell, 1)}
