"""Shared fixtures: an isolated build cache, a clean report per test, and the `target` parametrisation."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["board_fixtures"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep compiled kernels of the test run out of the user's cache."""
    if "PYNQTORCH_CACHE" not in os.environ:
        os.environ["PYNQTORCH_CACHE"] = str(tmp_path_factory.mktemp("pynqtorch-cache"))
