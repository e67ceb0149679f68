"""The recurrent cells of float32 layers (`ops.cells`): their sigmoid/tanh against torch's, the native cell and the
native steps (`hostops`) against the torch definition, bit for bit."""

from __future__ import annotations

import pytest
import torch

from pynqtorch import hostops
from pynqtorch.ops import cells

needs_native = pytest.mark.skipif(hostops.library() is None, reason="no C++ compiler for the native passes")
SPECIALS = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-30, -1e-40, 0.625, -0.625, 87.5, -87.5, 88.5,
            -88.5, 200.0, -200.0]


def _values() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.randn(20000, generator=g) * s for s in (1e-3, 0.3, 1.0, 4.0, 20.0)]
                     + [torch.tensor(SPECIALS)])


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_activations_agree_with_torchs_within_two_ulp(name):
    x = _values()
    got = getattr(cells, name)(x)
    want = getattr(torch, name)(x.double())
    assert got.dtype == torch.float32 and torch.equal(got.isnan(), want.isnan())
    ok = ~want.isnan()
    err = (got[ok].double() - want[ok]).abs()
    # 2 ulp of the result, and at most 2**-126 absolute where the result is below float32's normal range
    assert (err <= 2 * torch.finfo(torch.float32).eps * want[ok].abs() + 2.0 ** -126).all(), x[ok][err.argmax()]


def _gates(m: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    gates = torch.randn(m, n, generator=g) * torch.logspace(-3, 2, m)[:, None]
    gates[0, :min(n, len(SPECIALS))] = torch.tensor(SPECIALS)[:n]
    return gates


@needs_native
@pytest.mark.parametrize("gru", [False, True])
@pytest.mark.parametrize("hid", [128, 20, 3])
def test_native_cell_is_the_torch_definition_bit_for_bit(gru, hid):
    """Non-finite, huge and tiny gates included; the hidden sizes cover full vectors and partial ones."""
    m, n = 6, (3 if gru else 4) * hid
    gates, gx = _gates(m, n, 1), _gates(m, n, 2)
    h, c = torch.randn(m, hid), torch.randn(m, hid) * 3
    c_native, c_torch = c.clone(), c.clone()
    h_native, h_torch = torch.empty(m, hid), torch.empty(m, hid)
    assert hostops.rnn_cell(gru, gx, gates, h, None if gru else c_native, h_native)
    if gru:
        cells.gru(gx, gates, h, h_torch)
    else:
        cells.lstm(gates, c_torch, h_torch)
    torch.testing.assert_close(h_native, h_torch, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(c_native, c_torch, rtol=0, atol=0, equal_nan=True)
    # a view that is not contiguous is declined, nothing written
    assert not hostops.rnn_cell(gru, gx, gates, h.t().contiguous().t(), None if gru else c_native, h_native)


def _weight(k: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randint(-127, 128, (k, n), generator=g).float(), torch.rand(n, generator=g) * 1e-2 + 1e-4


@needs_native
@pytest.mark.parametrize("gru", [False, True])
@pytest.mark.parametrize("vnni", [True, False])
@pytest.mark.parametrize("hid", [32, 20])
def test_native_steps_are_the_passes_and_cells_bit_for_bit(gru, vnni, hid):
    """`RowsGemm.steps` equals each step's `RowsGemm` pass followed by the torch cell, in both directions; a NaN in
    the input projection makes the next step's pass decline: the steps stop there with that step unwritten."""
    t_len, m = 7, 3
    n = (3 if gru else 4) * hid
    b, sb = _weight(hid, n)
    rows = hostops.RowsGemm(b, sb, True, 127, vnni=vnni)
    if vnni and not rows.vnni:
        pytest.skip("this CPU has no AVX-512 VNNI")
    g = torch.Generator().manual_seed(4)
    gx, h0, c0 = torch.randn(t_len, m, n, generator=g), torch.randn(m, hid, generator=g), torch.randn(m, hid)
    bias = torch.randn(n, generator=g)
    gx[5, 1, 0] = float("nan")
    for step, first in ((1, 0), (-1, t_len - 1)):
        out = torch.full((t_len, m, hid), 7.0)
        c = None if gru else c0.clone()
        order = list(range(t_len))[::step]
        done = rows.steps(gru, gx, out, first, t_len, step, h0, c, bias)
        # forward: time 5 makes row 1 NaN, time 6 declines; backward: time 5 is the 2nd step, time 4 declines
        assert done == (6 if step == 1 else 2)
        want_c = None if gru else c0.clone()
        h = h0
        for t in order[:done]:
            gates = rows(h, bias, None if gru else gx[t])
            want = torch.empty(m, hid)
            if gru:
                cells.gru(gx[t], gates, h, want)
            else:
                cells.lstm(gates, want_c, want)
            torch.testing.assert_close(out[t], want, rtol=0, atol=0, equal_nan=True)
            h = want
        assert rows(h, bias, None if gru else gx[order[done]]) is None  # the pass declines that step
        assert (out[order[done]] == 7.0).all()
        if not gru:
            torch.testing.assert_close(c, want_c, rtol=0, atol=0, equal_nan=True)


@needs_native
def test_native_steps_reject_operands_of_the_wrong_shape():
    b, sb = _weight(8, 32)
    rows = hostops.RowsGemm(b, sb, True, 127)
    gx, out, h0, c = torch.zeros(4, 2, 32), torch.zeros(4, 2, 8), torch.zeros(2, 8), torch.zeros(2, 8)
    assert rows.steps(False, gx, out, 0, 4, 1, h0, c, None) == 4
    for args in [(True, gx, out, 0, 4, 1, h0, None, None),  # 32 = 4 * 8 columns are an LSTM's
                 (False, gx, out, 0, 5, 1, h0, c, None),  # beyond the sequence
                 (False, gx, out, 3, 4, 1, h0, c, None),
                 (False, gx, out, 0, 4, 1, h0, None, None),  # an LSTM needs its cell state
                 (False, gx, out[:, :1], 0, 4, 1, h0, c, None),
                 (False, gx.double(), out, 0, 4, 1, h0, c, None),
                 (False, gx, out, 0, 4, 1, h0.t(), c, None),
                 (False, gx, out, 0, 4, 1, h0, c, torch.zeros(31))]:
        with pytest.raises(ValueError, match="RowsGemm.steps"):
            rows.steps(*args)
