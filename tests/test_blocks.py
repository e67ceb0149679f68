"""Map/rows kernels (GELU, softmax, layer norm): descriptions, offload selection, tiling, fallback reasons,
csim and the virtual board against torch, and `pynqtorch verify` for them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import pynqtorch
from board_fixtures import Boards
from pynqtorch.cli import app
from pynqtorch.hw.description import DescriptionError
from pynqtorch.hw.families import load_description
from pynqtorch.hw.kernels import add_kernel_path, find_kernel
from pynqtorch.targets import registry
from pynqtorch.targets.csim import CsimTarget
from pynqtorch.targets.offload import parse_offload

CSIM = CsimTarget.probe()
needs_csim = pytest.mark.skipif(CSIM is not None, reason=f"csim unavailable: {CSIM}")
TARGETS = ["ref", pytest.param("csim", marks=needs_csim)]
F = torch.nn.functional


@pytest.fixture(autouse=True)
def _restore_target():
    pynqtorch.reset_report()
    yield
    registry.reset()


def _kernel_copy(tmp_path: Path, kernel: str, name: str, **changes: object) -> Path:
    """A copy of a bundled kernel folder named `name` with description fields replaced."""
    folder = tmp_path / name
    shutil.copytree(find_kernel(kernel).folder, folder)
    desc = json.loads((folder / "description.json").read_text())
    desc.update(name=name, **changes)
    (folder / "description.json").write_text(json.dumps(desc))
    return folder


# -- description ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kernel", "changes", "field", "message"), [
    ("gelu_f32", {"aten": ["aten::gelux"]}, "aten", "aten op 'aten::gelux' does not exist"),
    ("gelu_f32", {"aten": ["aten::gelu.nope"]}, "aten", "overload 'nope' does not exist"),
    ("gelu_f32", {"aten": ["gelu"]}, "aten", "is not an aten op name"),
    ("gelu_f32", {"aten": ["aten::add.Tensor"], "match": {}}, "<root>",
     ("aten[0]: aten::add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor is not an element-wise "
      "op of 1 tensor input")),
    ("gelu_f32", {"match": {"alpha": 1}}, "<root>", "match: ['alpha'] are not arguments of aten::gelu"),
    ("gelu_f32", {"perf": {"cycles": "m * n"}}, "<root>", "unknown name 'm' (use n)"),
    ("gelu_f32", {"io": {"format": "ap_fixed<16,6>"}}, "<root>", "args[0].ctype: 'const float*' but role 'x' with io ap_fixed<16,6> needs an integer type"),
    ("gelu_f32", {"io": {"format": "ap_fixed<40,6>"}}, "io.format", "is not float32, int8 or ap_fixed"),
    ("gelu_f32", {"io": {"format": "int8"}}, "io", "scale: required for int8"),
    ("gelu_f32", {"op": "conv"}, "op", "'conv' is not one of ['gemm', 'map', 'rows']"),
    ("softmax_rows", {"aten": ["aten::gelu"]}, "<root>", "aten[0]: aten::gelu exists but pynqtorch binds only"),
    ("layernorm_rows", {"limits": {"max_cols": 0, "max_rows": 4}}, "limits.max_cols", "greater than 0"),
])
def test_bad_descriptions_name_file_field_and_problem(tmp_path: Path, kernel: str, changes: dict, field: str,
                                                      message: str) -> None:
    folder = _kernel_copy(tmp_path, kernel, "bad", **changes)
    with pytest.raises(DescriptionError) as e:
        load_description(folder / "description.json")
    text = str(e.value)
    assert str(folder / "description.json") in text and f"field '{field}" in text and message in text, text


def test_rows_op_without_its_roles_is_refused(tmp_path: Path) -> None:
    desc = json.loads((find_kernel("layernorm_rows").folder / "description.json").read_text())
    args = [a for a in desc["args"] if a["role"] != "eps"]
    folder = _kernel_copy(tmp_path, "layernorm_rows", "no_eps", args=args)
    with pytest.raises(DescriptionError, match=r"aten::native_layer_norm needs roles .*lack \['eps'\]"):
        load_description(folder / "description.json")


def test_fixed_point_format_encodes_with_its_step_and_range(tmp_path: Path) -> None:
    import numpy as np

    from pynqtorch.hw import blocks

    desc = json.loads((find_kernel("gelu_f32").folder / "description.json").read_text())
    for a in desc["args"][:2]:
        a["ctype"] = "short*"
    folder = _kernel_copy(tmp_path, "gelu_f32", "fixed", io={"format": "ap_fixed<16,6>"}, args=desc["args"])
    d = load_description(folder / "description.json")
    assert d.io.step == 2 ** -10 and blocks.format_range(d) == (-32.0, 32 - 2 ** -10)
    x = np.array([0.5, -1.25, 3.0009765625, 31.9990234375], np.float32)
    words = blocks.encode(d, d.roles["x"], x)
    assert words.dtype == np.int16 and list(words) == [512, -1280, 3073, 32767]
    assert np.array_equal(blocks.decode(d, d.roles["out"], words, 4), x)


# -- offload selection ------------------------------------------------------------------------------------

def test_offload_selection_parses_names_aliases_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYNQTORCH_OFFLOAD", raising=False)
    assert parse_offload(None).ops == frozenset() and str(parse_offload("gemm")) == "gemm"
    assert parse_offload("all").ops is None
    assert parse_offload("gelu, softmax").ops == {"aten::gelu", "aten::_softmax"}
    assert parse_offload(["aten::native_layer_norm", "gemm"]).ops == {"aten::native_layer_norm"}
    monkeypatch.setenv("PYNQTORCH_OFFLOAD", "layer_norm")
    assert parse_offload(None).ops == {"aten::native_layer_norm"}
    with pytest.raises(ValueError, match=r"no map/rows kernel implements aten::erf \(from 'erf'\)"):
        parse_offload("gelu,erf")


def test_a_map_kernel_is_not_a_gemm_kernel() -> None:
    with pytest.raises(ValueError, match=r"kernel .gelu_f32. is a map kernel; use\(kernel=\) takes a GEMM kernel"):
        pynqtorch.use("ref", kernel="gelu_f32")


# -- ops on kernels ---------------------------------------------------------------------------------------

def _close(got: torch.Tensor, want: torch.Tensor, kernel: str) -> None:
    tol = find_kernel(kernel).desc.verify.tolerance
    torch.testing.assert_close(got, want, atol=tol.abs, rtol=tol.rel, equal_nan=True)


@pytest.mark.parametrize("target", TARGETS)
def test_ops_run_on_their_kernels_cut_into_calls(target: str) -> None:
    pynqtorch.use(target, offload="all")
    torch.manual_seed(0)
    x = torch.randn(3, 70, 384) * 3          # 80,640 elements: 20 GELU blocks; 210 rows: 4 row blocks
    ln = torch.nn.LayerNorm(384)
    ln.weight.data.normal_()
    ln.bias.data.normal_()
    want = (F.gelu(x), torch.softmax(x, -1), ln(x).detach())
    z = x.to("zynq")
    zln = torch.nn.LayerNorm(384).to("zynq")
    zln.load_state_dict(ln.state_dict())
    with torch.no_grad():
        got = (F.gelu(z), torch.softmax(z, -1), zln(z))
    for g, w, k in zip(got, want, ("gelu_f32", "softmax_rows", "layernorm_rows")):
        assert g.device.type == "zynq" and g.shape == w.shape and g.dtype == w.dtype
        _close(g.cpu(), w, k)
    rep = pynqtorch.report()
    assert {"aten::gelu", "aten::_softmax", "aten::native_layer_norm"} <= set(rep.accelerated), rep
    assert not rep.reasons, rep
    calls = {u: s["calls"] for u, s in rep.engine["units"].items()}
    assert sum(n for u, n in calls.items() if "gelu_f32" in u) == 20
    assert sum(n for u, n in calls.items() if "softmax_rows" in u) == 4


def test_layer_norm_returns_mean_and_rstd_and_keeps_autograd() -> None:
    pynqtorch.use("ref", offload="layer_norm")
    torch.manual_seed(1)
    x = torch.randn(5, 7, 64)
    w, b = torch.randn(64, requires_grad=True), torch.randn(64, requires_grad=True)
    out, mean, rstd = torch.native_layer_norm(x.to("zynq"), [64], w.detach().to("zynq"), b.detach().to("zynq"), 1e-5)
    eout, emean, erstd = torch.native_layer_norm(x, [64], w.detach(), b.detach(), 1e-5)
    assert mean.shape == emean.shape == (5, 7, 1) and rstd.shape == erstd.shape
    for g, e in ((out, eout), (mean, emean), (rstd, erstd)):
        assert torch.equal(g.cpu(), e)  # ref runs torch's own op
    zw = w.detach().to("zynq").requires_grad_()
    F.layer_norm(x.to("zynq"), (64,), zw, None).sum().backward()
    F.layer_norm(x, (64,), w, None).sum().backward()
    torch.testing.assert_close(zw.grad.cpu(), w.grad)


def test_ops_outside_the_selection_stay_on_cpu_without_a_reason() -> None:
    pynqtorch.use("ref", offload="softmax")
    x = torch.randn(4, 16).to("zynq")
    F.gelu(x)
    torch.softmax(x, -1)
    rep = pynqtorch.report()
    assert "aten::gelu" in rep.cpu and "aten::_softmax" in rep.accelerated and not rep.reasons


@pytest.mark.parametrize("target", TARGETS)
def test_calls_the_kernel_cannot_take_fall_back_with_a_counted_reason(target: str) -> None:
    pynqtorch.use(target, offload="all")
    torch.manual_seed(2)
    long_rows = torch.randn(3, 1500)
    cases = [
        (lambda t: torch.softmax(t, -1), long_rows, "aten::_softmax",
         "rows of 1500 elements exceed kernel softmax_rows's row buffer of 1024"),
        (lambda t: torch.softmax(t, 0), torch.randn(4, 6), "aten::_softmax", "dim=0 is not the last dim"),
        (lambda t: F.gelu(t), torch.randn(8, dtype=torch.float64), "aten::gelu", "input 0 is torch.float64"),
        (lambda t: F.gelu(t, approximate="tanh"), torch.randn(8), "aten::gelu",
         "approximate='tanh': kernel gelu_f32 computes approximate='none'"),
        (lambda t: F.layer_norm(t, (4, 6)), torch.randn(2, 4, 6), "aten::native_layer_norm",
         "normalized_shape=[4, 6] is not the last dim"),
    ]
    for fn, x, op, reason in cases:
        got = fn(x.to("zynq"))
        assert torch.equal(got.cpu(), fn(x)), op  # the CPU computed it: nothing truncated
        reasons = pynqtorch.report().reasons[op]
        assert any(reason in r for r in reasons), reasons
    text = str(pynqtorch.report())
    assert "aten::_softmax on cpu: rows of 1500 elements" in text
    assert pynqtorch.report().to_dict()["fallback_reasons"]["aten::gelu"]


@needs_csim
def test_nan_and_inf_come_out_non_finite_where_torch_s_do() -> None:
    pynqtorch.use("csim", offload="all")
    torch.manual_seed(3)
    x = torch.randn(6, 40)
    x[1, 3], x[2, 5], x[3, :], x[4, 0], x[5, 7] = float("nan"), float("inf"), float("-inf"), float("-inf"), 1e30
    for fn in (F.gelu, lambda t: torch.softmax(t, -1), lambda t: F.layer_norm(t, (40,))):
        got, want = fn(x.to("zynq")).cpu(), fn(x)
        assert torch.equal(torch.isfinite(got), torch.isfinite(want))
        assert torch.equal(torch.isnan(got[:, :1] * 0), torch.isnan(want[:, :1] * 0))
        fin = torch.isfinite(want)
        torch.testing.assert_close(got[fin], want[fin], atol=2e-5, rtol=1e-4)
    assert not pynqtorch.report().reasons


def test_empty_and_zero_dim_tensors() -> None:
    pynqtorch.use("ref", offload="all")
    assert F.gelu(torch.empty(0, 5).to("zynq")).shape == (0, 5)
    assert torch.softmax(torch.empty(3, 0).to("zynq"), -1).shape == (3, 0)
    assert torch.equal(F.gelu(torch.tensor(1.5).to("zynq")).cpu(), F.gelu(torch.tensor(1.5)))


# -- verify -----------------------------------------------------------------------------------------------

@needs_csim
@pytest.mark.parametrize("kernel", ["gelu_f32", "softmax_rows", "layernorm_rows"])
def test_verify_passes_the_bundled_kernels_with_error_statistics(kernel: str) -> None:
    res = CliRunner().invoke(app, ["verify", kernel, "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["ok"] and data["warnings"] == []
    cases = {t["case"] for t in data["trials"]}
    assert {"NaN mixed in", "+Inf mixed in", "-Inf mixed in", "all 10000", "all -10000", "all 0"} <= cases
    assert all(t["failures"] == 0 for t in data["trials"])
    assert any(t["max_ulp"] > 0 for t in data["trials"])  # not bit-exact with torch: statistics are real


@needs_csim
def test_verify_fails_a_kernel_declaring_an_op_it_does_not_compute(tmp_path: Path) -> None:
    folder = _kernel_copy(tmp_path, "gelu_f32", "silu_claimed", aten=["aten::silu"], match={})
    res = CliRunner().invoke(app, ["verify", str(folder)], env={"COLUMNS": "200"})
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.output and "silu" in res.output
    data = json.loads(CliRunner().invoke(app, ["verify", str(folder), "--json"]).output)
    worst = max(data["trials"], key=lambda t: t["max_abs"])
    assert worst["failures"] > 0 and worst["max_abs"] > 0.1 and worst["first"] is not None


# -- board ------------------------------------------------------------------------------------------------

@needs_csim
def test_virtual_board_is_bit_identical_to_csim(boards: Boards) -> None:
    boards.connect(boards.start("gemm_ops"))
    torch.manual_seed(4)
    x = torch.randn(2, 70, 384)
    x[0, 0, 0] = float("nan")
    ln = torch.nn.LayerNorm(384)
    ln.weight.data.normal_()
    results = {}
    for target, opts in (("csim", {}), ("board", {"overlay": "gemm_ops"})):
        pynqtorch.use(target, offload="all", **opts)
        pynqtorch.reset_report()
        z = x.to("zynq")
        zln = torch.nn.LayerNorm(384).to("zynq")
        zln.load_state_dict(ln.state_dict())
        with torch.no_grad():
            results[target] = [F.gelu(z).cpu(), torch.softmax(z, -1).cpu(), zln(z).cpu()]
        assert {"aten::gelu", "aten::_softmax", "aten::native_layer_norm"} <= set(pynqtorch.report().accelerated)
    units = pynqtorch.report().engine["units"]
    assert units["board0/gelu_f32_0"]["calls"] == 14 and units["board0/layernorm_rows_0"]["calls"] == 3
    for c, b in zip(results["csim"], results["board"]):
        assert torch.equal(c.nan_to_num(), b.nan_to_num()) and torch.equal(c.isnan(), b.isnan())


@needs_csim
def test_board_overlay_without_the_ip_falls_back_with_the_reason(boards: Boards, packed_overlay: Path) -> None:
    boards.connect(boards.start(packed_overlay))
    pynqtorch.use("board", overlay=packed_overlay, offload="gelu")
    x = torch.randn(10)
    assert torch.equal(F.gelu(x.to("zynq")).cpu(), F.gelu(x))
    (reason,) = pynqtorch.report().reasons["aten::gelu"]
    assert "has no IP running kernel gelu_f32" in reason


def test_kernels_added_later_register_their_ops(tmp_path: Path) -> None:
    # A map kernel for aten::silu from a user folder: registered when use(offload=...) selects it.
    folder = _kernel_copy(tmp_path, "gelu_f32", "silu_user", aten=["aten::silu"], match={}, priority=1)
    add_kernel_path(folder)
    try:
        pynqtorch.use("ref", offload="silu")
        x = torch.randn(9)
        assert torch.equal(F.silu(x.to("zynq")).cpu(), F.silu(x))  # ref: torch's own op
        assert "aten::silu" in pynqtorch.report().accelerated
    finally:
        from pynqtorch.hw import kernels

        kernels._user_paths.remove(folder.resolve())
        kernels._scan.cache_clear()

