"""Real workloads on the zynq device: a CNN trained on scikit-learn's digits, and all-MiniLM-L6-v2 embeddings.

Each example module offers ``run(target=None) -> dict`` (plain data: figures, the report as a dict) and is
listed in `EXAMPLES` for ``pynqtorch run <name>``.
"""

from __future__ import annotations

EXAMPLES: dict[str, str] = {
    "digits": "small CNN (2 conv + linear) trained on scikit-learn's 8x8 digits; top-1 on zynq vs CPU fp32",
    "minilm": "all-MiniLM-L6-v2 sentence embeddings on zynq vs CPU fp32 (cosine similarity)",
}

__all__ = ["EXAMPLES"]
