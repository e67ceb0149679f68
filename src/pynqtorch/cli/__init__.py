"""The `pynqtorch` command: one typer app; each module of this package adds its subcommands."""

from __future__ import annotations

# Importing a module registers its subcommands on `app`.
from . import (
    bench,  # noqa: F401
    board,  # noqa: F401
    demo,  # noqa: F401
    fit,  # noqa: F401
    flows,  # noqa: F401
    info,  # noqa: F401
    kernels,  # noqa: F401
    overlay,  # noqa: F401
    run,  # noqa: F401
)
from ._app import app

__all__ = ["app"]
