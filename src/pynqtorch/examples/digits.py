"""A small CNN on scikit-learn's 8x8 digits: trained on CPU (cached), evaluated on CPU fp32 and on zynq.

The data set ships with scikit-learn (no download). Training takes a few seconds with a fixed seed; the
weights are cached under ``<pynqtorch cache>/examples`` keyed by everything that shapes them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .common import cache_dir, fallback_ops, ops_on_target, run_schemes, scheme_label, select_target


class DigitsCNN(nn.Module):
    """conv 1→16 (3x3) → ReLU → conv 16→32 (3x3) → ReLU → max-pool 2 → linear 512→10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (part of the cache key)."""

    seed: int = 0
    epochs: int = 30
    batch: int = 64
    lr: float = 3e-3
    test_fraction: float = 0.2
    version: int = 1  # bump when DigitsCNN or the data preparation changes


@dataclass
class Split:
    """Train and held-out tensors: images ``[N, 1, 8, 8]`` scaled to [0, 1], labels int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_split(cfg: TrainConfig = TrainConfig()) -> Split:
    """scikit-learn's digits (1797 images), stratified split with the config's seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(torch.arange(len(y)).numpy(), test_size=cfg.test_fraction,
                                           random_state=cfg.seed, stratify=y.numpy())
    return Split(x[idx_train], y[idx_train], x[idx_test], y[idx_test])


@torch.enable_grad()
def train(split: Split, cfg: TrainConfig = TrainConfig()) -> DigitsCNN:
    """Train a fresh DigitsCNN on CPU with Adam (deterministic for a given seed and thread count)."""
    torch.manual_seed(cfg.seed)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(split.y_train)
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, cfg.batch):
            idx = order[i:i + cfg.batch]
            loss = nn.functional.cross_entropy(model(split.x_train[idx]), split.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def weights_path(cfg: TrainConfig = TrainConfig()) -> Path:
    """Cache file of the weights trained with `cfg`."""
    key = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"digits_cnn-{key}.pt"


def trained_model(split: Split, cfg: TrainConfig = TrainConfig()) -> tuple[DigitsCNN, float | None]:
    """The cached model for `cfg`, trained and cached first if missing; also training seconds (None: cached)."""
    path = weights_path(cfg)
    model = DigitsCNN()
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval(), None
    t0 = time.perf_counter()
    model = train(split, cfg)
    seconds = time.perf_counter() - t0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)  # atomic: concurrent runs never read a half-written file
    return model, seconds


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose arg-max is the label."""
    return float((logits.argmax(1) == labels).float().mean())


@torch.no_grad()
def run(target: str | None = None, cfg: TrainConfig = TrainConfig(),
        progress: Callable[[str], None] | None = None, offload: str | list[str] | None = None) -> dict[str, Any]:
    """Evaluate the digits CNN on CPU fp32 and on zynq (target `target`) under each of `compared_schemes()`.

    Keys: ``fp32_top1``, ``zynq_top1`` (default scheme), ``per_tensor_top1``, ``delta_pp`` (zynq minus
    fp32, percentage points), ``schemes`` (per scheme: top-1, agreement with fp32 predictions, seconds;
    only ``scheme`` and ``skipped``, the reason, for a scheme the kernel cannot run),
    ``target``, ``kernel``, ``test_size``, ``train_seconds`` (None when the weights came from the cache),
    ``weights``, ``report`` (where every op of the default-scheme run ran), ``fallback_ops`` and
    ``ops_on_target``; `offload` selects non-GEMM ops for map/rows kernels (see `pynqtorch.use`).
    """
    step = progress or (lambda _msg: None)
    active = select_target(target, offload)
    step("loading the digits data set")
    split = load_split(cfg)
    step("training the CNN on CPU" if not weights_path(cfg).is_file() else "loading cached weights")
    model, train_s = trained_model(split, cfg)
    fp32_logits = model(split.x_test)
    fp32 = top1(fp32_logits, split.y_test)
    zmodel = copy.deepcopy(model).to("zynq")
    x = split.x_test.to("zynq")
    runs, skipped, report = run_schemes(lambda: zmodel(x).cpu(),
                               lambda name: step(f"evaluating on zynq ({active.name}, {name} scheme)"))
    schemes = {name: {"scheme": scheme_label(qcfg), "top1": top1(logits, split.y_test),
                      "agreement": float((logits.argmax(1) == fp32_logits.argmax(1)).float().mean()),
                      "seconds": seconds}
               for name, (qcfg, logits, seconds) in runs.items()} | skipped
    zynq = schemes["default"]["top1"]
    return {"example": "digits", "target": active.name, "kernel": active.desc.name,
            "test_size": len(split.y_test), "fp32_top1": fp32, "zynq_top1": zynq,
            "per_tensor_top1": schemes["per_tensor"]["top1"], "delta_pp": (zynq - fp32) * 100,
            "schemes": schemes, "train_seconds": train_s, "weights": str(weights_path(cfg)),
            "report": report, "fallback_ops": fallback_ops(report),
            "ops_on_target": ops_on_target(report), "offload": str(active.offload)}
