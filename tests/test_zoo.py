"""`pynqtorch bench zoo`: real architectures on zynq (rows, JSON, plot), and ref == csim bit for bit on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import pynqtorch
from pynqtorch.bench import zoo
from pynqtorch.cli import app
from pynqtorch.device.report import Report
from pynqtorch.targets import registry

runner = CliRunner()
CSIM_REASON = registry.unavailable_reason("csim")


@pytest.fixture(autouse=True)
def _reset() -> None:
    yield
    registry.reset()


def test_bench_zoo_quick_json_and_plot(tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", "zoo", "--quick", "--json", "--out", str(tmp_path),
                              "-m", "lenet", "-m", "gru"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)["zoo"]
    rows = {r["model"]: r for r in out["rows"]}
    assert set(rows) == {"lenet", "gru"} and out["target"] == "ref"
    for r in rows.values():
        assert r["ratio_min"] <= r["ratio"] <= r["ratio_max"] and r["cpu_ms"] > 0 and r["zynq_ms"] > 0
        assert 0 < r["rel_err"] < 0.05  # int8 quantization: close to fp32, not equal
        assert r["kernel_calls"] > 0 and r["accelerated_ops"] > 0
        assert r["time"]["accelerated_ms"] > 0
    assert rows["lenet"]["accelerated_ops"] == 5  # 2 convolutions and 3 linear layers, after a view flatten
    assert "aten::max_pool2d_with_indices" in rows["lenet"]["top_fallbacks"]
    assert rows["gru"]["accelerated_ops"] == 1  # the whole two-layer GRU is one op
    assert out["geomean_ratio"] > 0
    assert json.loads((tmp_path / "zoo.json").read_text())["rows"] == out["rows"]
    png = (tmp_path / "zoo.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_bench_zoo_rejects_unknown_model(tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", "zoo", "--quick", "--out", str(tmp_path), "-m", "alexnet"])
    assert res.exit_code != 0 and "alexnet" in res.output


@pytest.mark.skipif(CSIM_REASON is not None, reason=str(CSIM_REASON))
@pytest.mark.parametrize("name", ["lenet", "mobilenet_v2", "gru", "bert"])
def test_zoo_models_ref_equals_csim_bit_for_bit(name: str) -> None:
    """Every GEMM of the model (convolutions, grouped and depthwise, batched attention products, the recurrent
    steps) gives the same integers on the golden model and on the kernel's C++: the outputs are equal."""
    m = zoo._build(name, quick=True)
    model = m.model.eval().to("zynq")
    xs = tuple(x.to("zynq") for x in m.inputs)
    outs = {}
    for target in ("ref", "csim"):
        registry.use(target)
        pynqtorch.reset_report()
        with torch.no_grad():
            outs[target] = m.run(model, *xs).cpu()
        assert pynqtorch.report().engine["counters"]["kernel_calls"] > 0
    assert torch.equal(outs["ref"], outs["csim"])


def test_board_host_cost_measured_on_the_virtual_board() -> None:
    from pynqtorch.bench import hostcost

    (row,) = hostcost.measure_virtual([(16, 32, 8)], reps=2)
    assert (row["m"], row["n"], row["k"]) == (16, 32, 8)
    assert 0 < row["prepare_s"] < row["call_s"]  # packing is part of the call, which also crosses gRPC


def test_predicted_board_time_adds_the_host_cost_of_every_call() -> None:
    from pynqtorch.hw.kernels import find_kernel
    from pynqtorch.hw.perf import HostModel, gemm_perf, workload_perf

    desc = find_kernel("gemm_i8_packed").desc
    host = HostModel(fixed_us=100.0, copy_mb_s=500.0, collect_mb_s=250.0)
    got = workload_perf(desc, [(3, 2000, 300, 64)], 100.0, host)
    p = gemm_perf(desc, 2000, 300, 64, clock_mhz=100.0)
    assert got["calls"] == 3 * p.calls > 3  # M and N split into several calls
    assert got["kernel_s"] == pytest.approx(3 * p.kernel_s)
    # A int8 (one byte each), B packed 8 per 64-bit word (one byte each), C int32.
    want = 3 * sum(s.count * (100e-6 + (s.m * s.k + s.k * s.n) / 500e6 + 4 * s.m * s.n / 250e6) for s in p.shapes)
    assert got["host_s"] == pytest.approx(want)


def test_packing_rule_is_shared_by_engine_and_prediction() -> None:
    """`hw.tiling.pack_factor` decides how many of a batch's products share a call, for the scheduler and the
    predicted board time alike: depthwise 3×3 on `gemm_i8_packed` (tile n 32, k 8) packs 32 channels."""
    from pynqtorch.hw.kernels import find_kernel
    from pynqtorch.hw.perf import gemm_perf, workload_perf
    from pynqtorch.hw.tiling import pack_factor

    assert pack_factor(96, 1, 9, 16, 8, 256, 1024) == 16
    assert pack_factor(12, 8, 72, 16, 8, 256, 1024) == 2
    assert pack_factor(8, 64, 64, 16, 8, 256, 1024) == 1  # blocks would cost more tiles than apart
    assert pack_factor(96, 300, 9, 16, 8, 256, 1024) == 1  # does not fit one call's N
    desc = find_kernel("gemm_i8_packed").desc
    assert pack_factor(96, 1, 9, desc.tile.n, desc.tile.k, desc.dim_limit("n"), desc.dim_limit("k")) == 32
    got = workload_perf(desc, [(96, 392, 1, 9)], 100.0)
    assert got["calls"] == 3 * gemm_perf(desc, 392, 32, 288, clock_mhz=100.0).calls


def test_bench_zoo_compile_quick_row(tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", "zoo", "--compile", "--quick", "--json", "--out", str(tmp_path),
                              "-m", "lenet"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)["zoo"]
    assert out["compiled"] and out["geomean_ratio"] > 0 and out["geomean_vs_compiled_cpu"] > 0
    (row,) = out["rows"]
    assert row["ratio_min"] <= row["ratio"] <= row["ratio_max"] and row["ratio_vs_compiled_cpu"] > 0
    assert row["cpu_ms"] > 0 and row["cpu_compiled_ms"] > 0 and row["zynq_ms"] > 0 and row["zynq_eager_ms"] > 0
    assert row["compile_s"]["zynq"] > 0 and row["compile_s"]["cpu"] > 0
    assert (row["graphs"], row["graph_breaks"], row["recompiles"], row["graph_calls"]) == (1, 0, 0, 1)
    assert row["runs"] == {"lowered": 1, "gemm": 0, "inductor": 0, "eager": 0}
    assert row["kernel_calls"] > 0 and row["accelerated_ops"] == 5  # 2 convolutions, 3 linear layers
    assert row["top_fallbacks"] == {"aten::_copy_from": 1}  # only the output's .cpu(): the rest is compiled
    assert row["time"]["inductor_ms"] > 0
    assert 0 < row["rel_err"] < 0.05 and row["rel_diff_vs_eager"] < 1e-5
    assert json.loads((tmp_path / "zoo-compile.json").read_text())["rows"] == out["rows"]
    assert (tmp_path / "zoo-compile.png").read_bytes().startswith(b"\x89PNG")


def test_bench_zoo_compile_reports_models_dynamo_does_not_compile(tmp_path: Path) -> None:
    """A model dynamo gives no graph (here: PyTorch's own switch forcing eager runs) is an error row, not an eager
    run counted as compiled."""
    with torch.compiler.set_stance("force_eager"):
        res = runner.invoke(app, ["bench", "zoo", "--compile", "--quick", "--json", "--out", str(tmp_path),
                                  "-m", "lenet"])
    assert res.exit_code == 1
    (row,) = json.loads(res.stdout)["zoo"]["rows"]
    assert "ratio" not in row and row["error"].startswith("NotCompiled: dynamo gave the backend no graph")


def test_bench_zoo_compiles_recurrent_models(tmp_path: Path) -> None:
    """The zoo traces recurrent modules: the GRU is one lowered graph whose layer stack is one accelerated op,
    with eager zynq's result."""
    res = runner.invoke(app, ["bench", "zoo", "--compile", "--quick", "--json", "--out", str(tmp_path), "-m", "gru"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)["zoo"]["rows"]
    assert (row["graphs"], row["graph_breaks"], row["graph_calls"]) == (1, 0, 1)
    assert row["runs"] == {"lowered": 1, "gemm": 0, "inductor": 0, "eager": 0}
    assert row["accelerated_ops"] == 1 and row["kernel_calls"] > 0 and row["rel_diff_vs_eager"] == 0


SDPA = "aten::_scaled_dot_product_fused_attention_overrideable"
COMPILED = ["lenet", *(pytest.param(name, marks=pytest.mark.slow) for name in ("gpt2", "mobilenet_v2", "t5"))]


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_zoo_model_matches_eager_zynq(name: str) -> None:
    """The model compiled as one inductor graph (GEMMs lowered to the kernel's ops) gives eager zynq's result
    with the same kernel work."""
    from pynqtorch.device.compiler import STATS

    m = zoo._build(name, quick=True)
    model = m.model.eval().to("zynq")
    xs = tuple(x.to("zynq") for x in m.inputs)
    torch._dynamo.reset()
    STATS.reset()
    compiled = torch.compile(model, backend="pynqtorch")
    with torch.no_grad():
        pynqtorch.reset_report()
        eager = m.run(model, *xs).cpu()
        eager_rep = pynqtorch.report()
        got = m.run(compiled, *xs)
        pynqtorch.reset_report()
        got = m.run(compiled, *xs).cpu()
        rep = pynqtorch.report()
    assert STATS.lowered == 1 and STATS.eager_runs == 0 and STATS.gemm_runs == 0
    assert rep.engine["counters"]["kernel_calls"] == eager_rep.engine["counters"]["kernel_calls"] > 0
    # eager runs an attention as one op (the overrideable SDPA backend), compiled code as its two products
    def products(r: Report) -> int:
        return sum(v.calls * (2 if op == SDPA else 1) for op, v in r.accelerated.items())

    assert products(rep) == products(eager_rep)
    # inductor may round float ops differently, which can move a value across an int8 step: close, not equal
    assert ((got - eager).double().norm() / eager.double().norm()).item() < 1e-3
