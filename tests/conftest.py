"""Shared fixtures: an isolated build cache, a clean report per test, and the `target` parametrisation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import pynqtorch
from pynqtorch import engine
from pynqtorch.engine import QuantConfig
from pynqtorch.targets import registry

pytest_plugins = ["board_fixtures"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

PACKED_KERNEL = "gemm_i8_packed"  # the kernel of the board fixtures' overlay


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep compiled kernels of the test run out of the user's cache."""
    if "PYNQTORCH_CACHE" not in os.environ:
        os.environ["PYNQTORCH_CACHE"] = str(tmp_path_factory.mktemp("pynqtorch-cache"))


@pytest.fixture
def fresh_report() -> None:
    """Op counters and engine statistics at zero, strict mode off."""
    pynqtorch.strict(False)
    pynqtorch.reset_report()


@pytest.fixture
def fresh_target(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No active target before and after the test (``PYNQTORCH_TARGET`` unset), engine statistics at zero and
    the global quantization config at its default."""
    monkeypatch.delenv(registry.ENV_TARGET, raising=False)
    registry.reset()
    engine.reset_stats()
    engine.set_quant_config(QuantConfig())
    yield
    engine.set_quant_config(QuantConfig())
    registry.reset()


@dataclass(frozen=True)
class TargetCase:
    """One engine target of the `target` parametrisation: its name and `pynqtorch.use` options."""

    name: str
    options: dict[str, Any]

    def use(self, kernel: str = PACKED_KERNEL) -> registry.ActiveTarget:
        return pynqtorch.use(self.name, kernel=kernel, **self.options)


@pytest.fixture(params=["ref", "csim", "board"])
def target(request: pytest.FixtureRequest, fresh_target: None) -> TargetCase:
    """Each engine target in turn (``target.use()`` activates it with `gemm_i8_packed`); csim and board are
    skipped where they cannot run, board runs against a virtual PYNQ-Z2 on 127.0.0.1."""
    name = request.param
    reason = registry.unavailable_reason("csim" if name == "board" else name)  # the virtual board runs csim
    if reason is not None:
        pytest.skip(f"{name} unavailable: {reason}")
    if name != "board":
        return TargetCase(name, {})
    overlay = request.getfixturevalue("packed_overlay")
    boards = request.getfixturevalue("boards")
    boards.connect(boards.start(overlay))
    reason = registry.unavailable_reason(name)
    if reason is not None:
        pytest.skip(f"board unavailable: {reason}")
    return TargetCase(name, {"overlay": overlay})
