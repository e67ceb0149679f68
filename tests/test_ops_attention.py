"""The fused transformer fast paths on zynq (`_transformer_encoder_layer_fwd`, `_native_multi_head_attention`)
are decomposed so their GEMMs run on the kernel, with CPU's results within the int8 scheme's tolerance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pynqtorch

FAST_PATHS = {"aten::_transformer_encoder_layer_fwd", "aten::_native_multi_head_attention"}


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.cpu() - want).norm() / want.norm())


def _on_kernel() -> None:
    rep = pynqtorch.report()
    # the projections as addmm, the two batched products of each attention counted as the fast path's
    assert rep.accelerated["aten::addmm"].calls > 0, rep
    assert rep.accelerated["aten::_native_multi_head_attention"].calls % 2 == 0 < rep.accelerated[
        "aten::_native_multi_head_attention"].calls, rep
    assert rep.engine["counters"]["kernel_calls"] > 0
    assert not FAST_PATHS & set(rep.cpu), rep


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_fast_path_runs_on_the_kernel(norm_first: bool, activation: str) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=norm_first,
                                       activation=activation).eval()
    x = torch.randn(3, 7, 16)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[0, 5:] = True
    with torch.no_grad():
        want, want_pad = layer(x), layer(x, src_key_padding_mask=pad)
        layer.to("zynq")
        pynqtorch.reset_report()
        got = layer(x.to("zynq"))
        _on_kernel()
        got_pad = layer(x.to("zynq"), src_key_padding_mask=pad.to("zynq"))
    assert got.device.type == "zynq" and got.shape == want.shape
    assert _rel(got, want) < 0.02 and _rel(got_pad, want_pad) < 0.02


def test_stacked_encoder_runs_on_the_kernel() -> None:
    torch.manual_seed(1)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True), 2).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        want = enc(x)
        enc.to("zynq")
        pynqtorch.reset_report()
        got = enc(x.to("zynq"))
    _on_kernel()
    assert _rel(got, want) < 0.02


@pytest.mark.parametrize("kwargs", [{}, {"need_weights": False}, {"average_attn_weights": False}],
                         ids=["weights", "no_weights", "per_head_weights"])
def test_multi_head_attention_fast_path_runs_on_the_kernel(kwargs: dict) -> None:
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        want = mha(x, x, x, **kwargs)
        mha.to("zynq")
        xz = x.to("zynq")
        pynqtorch.reset_report()
        got = mha(xz, xz, xz, **kwargs)
    _on_kernel()
    assert _rel(got[0], want[0]) < 0.02
    if want[1] is None:
        assert got[1] is None
    else:
        assert got[1].shape == want[1].shape and _rel(got[1], want[1]) < 0.02


@torch.no_grad()
def test_encoder_with_a_padding_mask_names_nested_tensors_and_the_way_out() -> None:
    """In eval mode nn.TransformerEncoder turns a padding mask into nested tensors, which zynq cannot hold: a clear
    error naming the switch; with the switch off, the encoder runs on the kernel and agrees with CPU."""
    import copy

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    x = torch.randn(3, 7, 32)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[0, 5:] = True
    mask[1, 3:] = True
    nested = nn.TransformerEncoder(layer, 2).eval()
    with pytest.raises(RuntimeError, match=r"made a nested tensor.*enable_nested_tensor=False"):
        copy.deepcopy(nested).to("zynq")(x.to("zynq"), src_key_padding_mask=mask.to("zynq"))
    dense = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    want = dense(x, src_key_padding_mask=mask)
    got = copy.deepcopy(dense).to("zynq")(x.to("zynq"), src_key_padding_mask=mask.to("zynq"))
    _on_kernel()
    assert _rel(got.cpu(), want) < 0.03
