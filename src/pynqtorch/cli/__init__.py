"""The `pynqtorch` command: one typer app; each module of this package adds its subcommands."""

from __future__ import annotations

from ._app import app

# Importing a module registers its subcommands on `app`.
from . import demo  # noqa: E402,F401
from . import info  # noqa: E402,F401
from . import flows  # noqa: E402,F401
from . import kernels  # noqa: E402,F401
from . import board  # noqa: E402,F401
from . import run  # noqa: E402,F401
from . import bench  # noqa: E402,F401

__all__ = ["app"]
