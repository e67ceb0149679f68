"""`pynqtorch virtual-board`: serve a virtual PYNQ-Z2 (PYNQ.remote over gRPC) whose fabric runs C-sim kernels."""

from __future__ import annotations

import logging
import signal
import sys

import typer

from ._app import app, console, fail


@app.command("virtual-board")
def virtual_board(
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback unless you mean to expose it)"),
    port: int = typer.Option(7967, help="TCP port (7967 is PYNQ.remote's; 0 picks a free one)"),
    overlay: str = typer.Option(None, help="overlay loaded at boot, whose bitstream a client may download again "
                                "(bundled name, folder with overlay.json, or a Vivado build: <name>.bit + <name>.hwh)"),
    hang: bool = typer.Option(False, help="fault: kernels never raise ap_done"),
    delay: float = typer.Option(0.0, help="fault: extra seconds per kernel call"),
    corrupt: bool = typer.Option(False, help="fault: flip a bit of one result word per call"),
    die_at_start: int = typer.Option(0, help="fault: the process exits during the N-th ap_start (0: never)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log every design load and fault"),
) -> None:
    """Run a virtual PYNQ-Z2 until interrupted; point clients at it with PYNQ_REMOTE_DEVICES=HOST:PORT."""
    from ..hw.overlay import OverlayError
    from ..sim.fabric import Faults
    from ..sim.server import VirtualBoard

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="virtual-board: %(message)s")
    if delay < 0 or die_at_start < 0:
        fail("--delay and --die-at-start must not be negative")
    faults = Faults(hang=hang, delay_s=delay, corrupt=corrupt, die_at_start=die_at_start)
    try:
        board = VirtualBoard(overlay, host=host, port=port, faults=faults, exit_on_die=True)
        board.start()
    except (OverlayError, OSError) as e:
        fail(str(e))
    signal.signal(signal.SIGTERM, lambda *_: board.stop(0))
    # The first stdout line is machine-readable: scripts and test fixtures wait for it.
    print(f"listening {board.address} design={board.design or 'none'}", flush=True)
    console.print(f"[dim]export PYNQ_REMOTE_DEVICES={board.address}[/]", highlight=False)
    try:
        board.wait()
    except KeyboardInterrupt:
        board.stop(0)
