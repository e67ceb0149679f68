"""`pynqtorch demo`: a small model moved to zynq, compared with CPU fp32, with the report of where ops ran."""

from __future__ import annotations

import typer

from ._app import app, console, emit_json


def run_demo(seed: int = 0) -> dict:
    """Run a small CNN + MLP on the zynq device and on CPU; return the comparison and the report of the second
    zynq forward (steady state)."""
    import torch
    from torch import nn

    import pynqtorch

    from ..engine import stats

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(16 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    ).eval()
    x = torch.randn(32, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)
        zmodel, zx = model.to("zynq"), x.to("zynq")
        zmodel(zx)  # the first forward sets up the target and quantizes the weights (cached from then on)
        pynqtorch.reset_report()
        got = zmodel(zx).cpu()
    rep = pynqtorch.report()
    rel = ((got - expected).norm() / expected.norm()).item()
    agree = (got.argmax(1) == expected.argmax(1)).float().mean().item()
    return {"target": stats()["target"], "kernel": stats()["kernel"], "relative_error": rel,
            "argmax_agreement": agree, "report": rep}


@app.command()
def demo(json_out: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Run a small CNN on the zynq device (default target) and compare it with CPU fp32."""
    r = run_demo()
    if json_out:
        emit_json({**r, "report": r["report"].to_dict()})
        return
    console.print(f"target [bold]{r['target']}[/] · kernel [bold]{r['kernel']}[/]")
    console.print(r["report"])
    console.print(f"zynq vs CPU fp32: relative error {r['relative_error']:.2e}, "
                  f"argmax agreement {r['argmax_agreement']:.1%}")
