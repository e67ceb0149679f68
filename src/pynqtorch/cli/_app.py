"""The typer application object and shared helpers for subcommands."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console

app = typer.Typer(name="pynqtorch", help="HLS-accelerated PyTorch for PYNQ boards.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)


def emit_json(obj: Any) -> None:
    """Print one JSON object on stdout (for `--json`)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def fail(message: str, code: int = 2) -> None:
    """Exit with a clean error message (no traceback) for user mistakes."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
