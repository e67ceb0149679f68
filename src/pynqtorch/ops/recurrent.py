"""LSTM and GRU layers on the kernel: the input projection of the whole sequence as one GEMM, then only the
recurrent GEMM per step.

PyTorch's composite `lstm`/`gru` precompute the input projection on CPU only; on other devices every step
issues two GEMMs and a fused cell through the dispatcher. These kernels take `aten::lstm.input` and
`aten::gru.input` at the autograd key of zynq: with gradients needed, for projections (`proj_size`) and for
training-mode dropout they run PyTorch's own composite (`OpOverload.decompose`), so autograd sees the usual
graph; otherwise they compute on CPU views with the engine. Per-row activation scales make the sequence's
input projection bit-identical to the per-step one. Float32 layers use the cells of `cells` (the same bits on every
target): on `ref` runs of steps are one native pass each (`BoundGemm.steps`); other dtypes use torch's activations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch._subclasses.fake_tensor import is_fake

from ..device.report import record
from ..device.storage import adopt_result
from ..engine import BoundGemm
from . import cells
from ._common import NotOffloadable, to_cpu
from .engine_bridge import bind, gemm
from .gemm import _check

aten = torch.ops.aten


class Cell(NamedTuple):
    """A recurrent cell: `step(gx, gh, state, h_out)` gives the new state, writing its hidden state into `h_out`;
    with `folds_input` the recurrent GEMM has added the step's input projection `gx` into `gh` already."""

    step: Callable[[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor], tuple[torch.Tensor, ...]]
    folds_input: bool


def _lstm_step(gx: torch.Tensor, gates: torch.Tensor, state: tuple[torch.Tensor, ...],
               h_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
    # Activated in place, without allocations: the same values as the out-of-place ops, which also run over the
    # strided gate views row by row.
    i, f, g, o = gates.chunk(4, 1)
    c = f.sigmoid_().mul_(state[1]).addcmul_(i.sigmoid_(), g.tanh_())
    return torch.mul(o.sigmoid_(), torch.tanh(c), out=h_out), c


def _gru_step(gx: torch.Tensor, gh: torch.Tensor, state: tuple[torch.Tensor, ...],
              h_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
    xr, xz, xn = gx.chunk(3, 1)
    hr, hz, hn = gh.chunk(3, 1)
    # r and z are activated out of place: on contiguous sums, whose elements torch's vector loops split as before
    # (an in-place activation of the strided gate views would compute some other elements in its scalar tail).
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = hn.mul_(r).add_(xn).tanh_()
    return torch.sub(state[0], n, out=h_out).mul_(z).add_(n),


LSTM_CELL, GRU_CELL = Cell(_lstm_step, folds_input=True), Cell(_gru_step, folds_input=False)


def _direction(x: torch.Tensor, state: tuple[torch.Tensor, ...], w: Sequence[torch.Tensor],
               owners: Sequence[torch.Tensor | None], cell: Cell, reverse: bool
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One layer in one direction over sequence-major CPU `x` ``[T, B, I]``; `w` are CPU views of the parameters
    (w_ih, w_hh[, b_ih, b_hh]), `owners` the zynq tensors they view (None: not cached)."""
    t_len, batch = x.shape[:2]
    gx = gemm(x.reshape(t_len * batch, -1), w[0].t(), b_owner=owners[0])
    b_hh = None
    if len(w) == 4:
        gx.add_(w[2])
        b_hh = w[3]
    gx = gx.view(t_len, batch, -1)
    recurrent = bind(w[1].t(), b_owner=owners[1])  # looked up once for all steps
    out = torch.empty(t_len, batch, w[1].shape[1], dtype=gx.dtype)
    if gx.dtype == torch.float32 and t_len:
        return out, _float32_steps(gx, state, recurrent, b_hh, cell, reverse, out)
    steps = zip(gx.unbind(0), out.unbind(0), strict=True)  # per-step views, made in one call each
    for gx_t, out_t in (reversed(list(steps)) if reverse else steps):
        gh = recurrent(state[0], b_hh, gx_t if cell.folds_input else None)
        state = cell.step(gx_t, gh, state, out_t)
    return out, state


def _float32_steps(gx: torch.Tensor, state: tuple[torch.Tensor, ...], recurrent: BoundGemm,
                   b_hh: torch.Tensor | None, cell: Cell, reverse: bool, out: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The steps of `_direction` for float32 with `ops.cells`' cells: runs of steps in one native pass where the
    engine has one (`BoundGemm.steps`), any other step as a product (`BoundGemm.__call__`) and a cell (`cells.step`);
    the same bits either way. Writes `out`, gives the final state."""
    t_len = gx.shape[0]
    gru = not cell.folds_input
    bias = None if b_hh is None else b_hh.contiguous()
    h0 = state[0].contiguous()
    c = None if gru else state[1].clone(memory_format=torch.contiguous_format)  # updated in place
    order = range(t_len - 1, -1, -1) if reverse else range(t_len)
    s = 0
    while s < t_len:
        s += recurrent.steps(gru, gx, out, order[s], t_len - s, order.step, h0 if s == 0 else out[order[s - 1]], c,
                             bias)
        if s < t_len:  # a step the native pass declined or does not take
            t, h = order[s], h0 if s == 0 else out[order[s - 1]]
            cells.step(gx[t], recurrent(h, bias, None if gru else gx[t]), h, c, out[t])
            s += 1
    h_last = out[order[-1]]
    return (h_last,) if gru else (h_last, c)


def run(x: torch.Tensor, hx: Sequence[torch.Tensor], params: Sequence[torch.Tensor],
        owners: Sequence[torch.Tensor | None], has_biases: bool, num_layers: int, bidirectional: bool,
        batch_first: bool, cell: Cell) -> tuple[torch.Tensor, ...]:
    """The layer stack on CPU tensors (`params` CPU views of the zynq `owners`, or None owners): the results of
    `aten::lstm.input` / `aten::gru.input` (inference: no dropout, no projections)."""
    dirs = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    seq = x.transpose(0, 1) if batch_first else x
    finals: list[list[torch.Tensor]] = [[] for _ in hx]
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            idx = layer * dirs + d
            part = slice(idx * per, (idx + 1) * per)
            out, st = _direction(seq, tuple(s[idx] for s in hx), params[part], owners[part], cell,
                                 reverse=d == 1)
            outs.append(out)
            for f, s in zip(finals, st, strict=True):
                f.append(s)
        seq = outs[0] if dirs == 1 else torch.cat(outs, 2)
    output = seq.transpose(0, 1) if batch_first else seq
    return (output, *(torch.stack(f) for f in finals))


def runs(x: torch.Tensor, params: Sequence[torch.Tensor], has_biases: bool, num_layers: int, dropout: float,
         train: bool, bidirectional: bool) -> bool:
    """Whether `run` computes this layer stack: a 3-D float input, no training-mode dropout, no projections (their
    weights would make more parameters than the layers' own)."""
    return (not (train and dropout > 0) and x.dim() == 3 and x.is_floating_point()
            and len(params) == num_layers * (2 if bidirectional else 1) * (4 if has_biases else 2))


def _accelerated(op: torch._ops.OpOverload, cell: Cell, n_state: int) -> Callable[..., tuple]:
    name = f"{op._schema.name}.{op._schema.overload_name}"

    def kernel(x: torch.Tensor, hx: torch.Tensor | Sequence[torch.Tensor], params: Sequence[torch.Tensor],
               has_biases: bool, num_layers: int, dropout: float, train: bool, bidirectional: bool,
               batch_first: bool) -> tuple:
        args = (x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
        states = list(hx) if n_state > 1 else [hx]
        tensors = [x, *states, *params]
        if (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)) \
                or not runs(x, params, has_biases, num_layers, dropout, train, bidirectional) \
                or not all(t.device.type == "zynq" for t in tensors) or any(is_fake(t) for t in tensors):
            return op.decompose(*args)
        t0 = time.perf_counter()
        try:
            _check(x, *params)
        except NotOffloadable:
            return op.decompose(*args)
        out = run(to_cpu(x), [to_cpu(h) for h in states], [to_cpu(p) for p in params], params, has_biases,
                  num_layers, bidirectional, batch_first, cell)
        result = tuple(adopt_result(o) for o in out)
        record(name, time.perf_counter() - t0, accelerated=True)
        return result

    return kernel


# aten::lstm.input(Tensor input, Tensor[] hx, Tensor[] params, bool has_biases, int num_layers, float dropout,
#     bool train, bool bidirectional, bool batch_first) -> (Tensor, Tensor, Tensor)
# aten::gru.input(Tensor input, Tensor hx, Tensor[] params, bool has_biases, int num_layers, float dropout,
#     bool train, bool bidirectional, bool batch_first) -> (Tensor, Tensor)
AUTOGRAD_KERNELS = {"lstm.input": _accelerated(aten.lstm.input, LSTM_CELL, 2),
                    "gru.input": _accelerated(aten.gru.input, GRU_CELL, 1)}
