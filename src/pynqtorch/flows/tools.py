"""Running the AMD tools: Vitis HLS on a kernel's `run_hls.tcl`, Vivado on an overlay's `run_vivado.tcl`.

Each run streams the tool's output (to a progress display and a log file next to the project), then
collects its reports into a dict. A missing tool raises `ToolMissing` naming what to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..hw.kernels import KernelInfo
from ..hw.overlay import OverlayInfo
from .reports import find_csynth_report, parse_vivado_timing, parse_vivado_utilization

HLS_STEPS = ("csim", "csynth", "cosim", "export")
# A line of tool output that marks the end of a step (Vitis HLS prints "Finished Command <cmd>").
HLS_MARKERS = {step: re.compile(rf"Finished Command {step}_design\b") for step in HLS_STEPS}
VIVADO_PHASES = {
    "project": re.compile(r"create_project\b"),
    "block design": re.compile(r"save_bd_design\b"),
    "synthesis": re.compile(r"launch_runs impl_1|Launched impl_1"),
    "implementation": re.compile(r"impl_1 finished"),
    "bitstream": re.compile(r"run_vivado\.tcl: wrote "),
}
INSTALL_HLS = ("install AMD Vitis (2023.2 or newer; or Vitis HLS 2020.2-2023.1) and put it on PATH with "
               "`source <install>/Vitis/settings64.sh`")
INSTALL_VIVADO = ("install AMD Vivado (2020.2 or newer, with Zynq-7000 device support and the PYNQ-Z2 "
                  "board files) and put it on PATH with `source <install>/Vivado/settings64.sh`")


class ToolMissing(RuntimeError):
    """The tool a flow needs is not on PATH; the message names what to install."""


class FlowError(RuntimeError):
    """A flow that cannot start (bad request, missing script) or whose tool failed."""


@dataclass
class ToolRun:
    """One finished tool run: what ran, where, how it ended, and the reports it left."""

    argv: list[str]
    cwd: Path
    returncode: int
    seconds: float
    log: Path
    steps_seen: list[str] = field(default_factory=list)
    reports: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"argv": self.argv, "cwd": str(self.cwd), "returncode": self.returncode,
                "seconds": round(self.seconds, 3), "log": str(self.log), "steps_seen": self.steps_seen,
                "reports": self.reports}


# Called with each output line and the phase it completed (or None).
LineSink = Callable[[str, "str | None"], None]


def stream(argv: Sequence[str], cwd: Path, log: Path, phases: dict[str, re.Pattern[str]],
           on_line: LineSink) -> tuple[int, list[str], float]:
    """Run `argv` in `cwd`, copying its merged output to `log` and `on_line`; returns (rc, phases seen, s)."""
    seen: list[str] = []
    start = time.monotonic()
    with log.open("w") as fh, subprocess.Popen(list(argv), cwd=cwd, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True, errors="replace",
                                               bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            hit = next((p for p, rx in phases.items() if p not in seen and rx.search(line)), None)
            if hit is not None:
                seen.append(hit)
            on_line(line.rstrip("\n"), hit)
        rc = proc.wait()
    return rc, seen, time.monotonic() - start


def hls_command(folder: Path, steps: Sequence[str], workdir: Path) -> list[str]:
    """The command running `folder/run_hls.tcl` with `steps`: `vitis-run` if on PATH, else `vitis_hls`.

    `vitis_hls` takes the steps as `-tclargs`; `vitis-run --tcl` takes no script arguments, so it runs a
    two-line wrapper (written into `workdir`) that sets `argv` and sources the kernel's script.
    """
    script = folder / "run_hls.tcl"
    if shutil.which("vitis-run"):
        wrapper = workdir / "pynqtorch_run_hls.tcl"
        wrapper.write_text(f"set argv [list {' '.join(steps)}]\nset argc {len(steps)}\n"
                           f"source {{{script}}}\n")
        return ["vitis-run", "--mode", "hls", "--tcl", str(wrapper)]
    if shutil.which("vitis_hls"):
        return ["vitis_hls", "-f", str(script), "-tclargs", *steps]
    raise ToolMissing(f"neither vitis-run nor vitis_hls is on PATH: {INSTALL_HLS}")


def run_hls(kernel: KernelInfo, steps: Sequence[str], on_line: LineSink) -> ToolRun:
    """Run the kernel's `run_hls.tcl` in its folder for `steps` (in flow order) and collect the csynth report."""
    unknown = [s for s in steps if s not in HLS_STEPS]
    if unknown:
        raise FlowError(f"unknown HLS step(s) {unknown}; steps are {list(HLS_STEPS)}")
    ordered = [s for s in HLS_STEPS if s in steps]
    if not ordered:
        raise FlowError(f"no HLS step chosen; choose from {list(HLS_STEPS)}")
    if ("cosim" in ordered or "export" in ordered) and "csynth" not in ordered:
        raise FlowError("cosim and export need csynth in the same run (run_hls.tcl resets the project); "
                        "add --csynth")
    folder = kernel.folder
    if not (folder / "run_hls.tcl").is_file():
        raise FlowError(f"kernel {kernel.name}: {folder / 'run_hls.tcl'} does not exist")
    with tempfile.TemporaryDirectory(prefix="pynqtorch-hls-") as tmp:
        argv = hls_command(folder, ordered, Path(tmp))
        log = folder / "pynqtorch_hls.log"
        rc, seen, seconds = stream(argv, folder, log, {s: HLS_MARKERS[s] for s in ordered}, on_line)
    run = ToolRun(argv, folder, rc, seconds, log, seen)
    if "csynth" in ordered:
        report = find_csynth_report(folder, kernel.desc.top)
        if report is not None:
            run.reports["csynth"] = report
    return run


def vivado_command(folder: Path, jobs: int, ip_repos: Sequence[Path]) -> list[str]:
    """The batch command building overlay `folder` (`vivado` must be on PATH)."""
    if not shutil.which("vivado"):
        raise ToolMissing(f"vivado is not on PATH: {INSTALL_VIVADO}")
    return ["vivado", "-mode", "batch", "-source", str(folder / "run_vivado.tcl"),
            "-tclargs", f"jobs={jobs}", *(f"ip_repo={p}" for p in ip_repos)]


def run_vivado(overlay: OverlayInfo, ip_repos: Sequence[Path], on_line: LineSink,
               jobs: int | None = None) -> ToolRun:
    """Build the overlay's bitstream with `run_vivado.tcl`; collect utilization, timing and the outputs."""
    folder = overlay.folder
    if not (folder / "run_vivado.tcl").is_file():
        raise FlowError(f"overlay {overlay.name}: {folder / 'run_vivado.tcl'} does not exist")
    argv = vivado_command(folder, jobs or max(1, min(8, os.cpu_count() or 1)), ip_repos)
    log = folder / "pynqtorch_vivado.log"
    started = time.time()
    rc, seen, seconds = stream(argv, folder, log, VIVADO_PHASES, on_line)
    run = ToolRun(argv, folder, rc, seconds, log, seen)
    reports = folder / "build" / "reports"
    if (reports / "utilization.rpt").is_file():
        run.reports["utilization"] = parse_vivado_utilization(reports / "utilization.rpt")
    if (reports / "timing_summary.rpt").is_file():
        run.reports["timing"] = parse_vivado_timing(reports / "timing_summary.rpt")
    # Only files this run wrote: a bitstream left from an earlier build is not an output of this one.
    run.reports["outputs"] = {p.name: str(p) for p in (overlay.bitstream, overlay.hwh)
                              if p.is_file() and p.stat().st_mtime >= started - 1}
    return run
