"""Reading tool reports into plain dicts: Vitis HLS csynth (XML or text) and Vivado utilization / timing."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


class ReportError(ValueError):
    """A report file that exists but cannot be understood; the message names the file."""


def _num(text: str | None) -> int | float | None:
    if text is None:
        return None
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def parse_csynth_xml(path: Path) -> dict[str, Any]:
    """Latency, interval, clock and resources from a Vitis HLS `csynth.xml` (or `<top>_csynth.xml`)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ReportError(f"{path}: not valid XML ({e})") from None
    perf = root.find("PerformanceEstimates")
    area = root.find("AreaEstimates")
    if perf is None or area is None:
        raise ReportError(f"{path}: no PerformanceEstimates/AreaEstimates (not a csynth report?)")
    lat = perf.find("SummaryOfOverallLatency")
    if lat is None:
        raise ReportError(f"{path}: no SummaryOfOverallLatency")
    used = area.find("Resources")
    avail = area.find("AvailableResources")
    return {
        "source": str(path),
        "top": root.findtext("UserAssignments/TopModelName"),
        "part": root.findtext("UserAssignments/Part"),
        "clock_target_ns": _num(root.findtext("UserAssignments/TargetClockPeriod")),
        "clock_estimated_ns": _num(perf.findtext("SummaryOfTimingAnalysis/EstimatedClockPeriod")),
        "latency_cycles": {"min": _num(lat.findtext("Best-caseLatency")), "max": _num(lat.findtext("Worst-caseLatency"))},
        "interval_cycles": {"min": _num(lat.findtext("Interval-min")), "max": _num(lat.findtext("Interval-max"))},
        "resources": {e.tag: _num(e.text) for e in (used if used is not None else [])},
        "available": {e.tag: _num(e.text) for e in (avail if avail is not None else [])},
    }


def _table_row(text: str, first_cell: str) -> list[str] | None:
    """Cells of the first `|...|` table row whose first cell is `first_cell`."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.strip().startswith("|") and cells and cells[0] == first_cell:
            return cells
    return None


def parse_csynth_rpt(path: Path) -> dict[str, Any]:
    """The same facts from the text report `<top>_csynth.rpt` (used when no XML is present)."""
    text = path.read_text(errors="replace")
    lat = re.search(r"\+ Latency:.*?\|\s*min\s*\|\s*max\s*\|.*?\n\s*\+[-+]+\+\n\s*\|(.+?)\|\s*\n", text, re.DOTALL)
    timing = re.search(r"\|\s*ap_clk\s*\|\s*([\d.]+)\s*ns\s*\|\s*([\d.]+)\s*ns", text)
    header = next((line for line in text.splitlines() if re.match(r"\s*\|\s*Name\s*\|\s*BRAM_18K", line)), None)
    total = _table_row(text, "Total")
    avail = _table_row(text, "Available")
    if lat is None or header is None or total is None:
        raise ReportError(f"{path}: no latency table or utilization estimates found (not a csynth report?)")
    cells = [c.strip() for c in lat.group(1).split("|")]
    names = [c.strip() for c in header.strip().strip("|").split("|")][1:]
    return {
        "source": str(path),
        "top": (m.group(1) if (m := re.search(r"HLS Report for '(\w+)'", text)) else None),
        "part": (m.group(1) if (m := re.search(r"\*\s*Target device:\s*(\S+)", text)) else None),
        "clock_target_ns": _num(timing.group(1)) if timing else None,
        "clock_estimated_ns": _num(timing.group(2)) if timing else None,
        "latency_cycles": {"min": _num(cells[0]), "max": _num(cells[1])},
        "interval_cycles": {"min": _num(cells[4]), "max": _num(cells[5])},
        "resources": {n: _num(v) for n, v in zip(names, total[1:])},
        "available": {n: _num(v) for n, v in zip(names, avail[1:])} if avail else {},
    }


def find_csynth_report(folder: Path, top: str) -> dict[str, Any] | None:
    """The newest csynth report for `top` under `folder` (XML preferred over text), or None."""
    xmls = [p for p in folder.rglob("*.xml") if p.name in ("csynth.xml", f"{top}_csynth.xml")]
    if xmls:
        return parse_csynth_xml(max(xmls, key=lambda p: p.stat().st_mtime))
    rpts = list(folder.rglob(f"{top}_csynth.rpt")) or list(folder.rglob("csynth.rpt"))
    if rpts:
        return parse_csynth_rpt(max(rpts, key=lambda p: p.stat().st_mtime))
    return None


_VIVADO_UTIL = {"Slice LUTs": "LUT", "Slice Registers": "FF", "Block RAM Tile": "BRAM_36K", "DSPs": "DSP"}


def parse_vivado_utilization(path: Path) -> dict[str, Any]:
    """Used / available LUT, FF, BRAM tiles and DSPs from `report_utilization` output."""
    text = path.read_text(errors="replace")
    out: dict[str, Any] = {}
    for label, key in _VIVADO_UTIL.items():
        row = _table_row(text, label) or _table_row(text, label + "*")
        if row is not None and len(row) >= 5:
            out[key] = {"used": _num(row[1]), "available": _num(row[-2]), "percent": _num(row[-1])}
    if not out:
        raise ReportError(f"{path}: no utilization table found (not a report_utilization output?)")
    return out


def parse_vivado_timing(path: Path) -> dict[str, Any]:
    """Worst negative / hold slack from `report_timing_summary` output."""
    text = path.read_text(errors="replace")
    m = re.search(r"WNS\(ns\)\s+TNS\(ns\).*?\n\s*-[-\s]+\n\s*(\S+)\s+(\S+)\s+\S+\s+\S+\s+(\S+)", text)
    if m is None:
        raise ReportError(f"{path}: no design timing summary found")
    wns = _num(m.group(1))
    return {"wns_ns": wns, "tns_ns": _num(m.group(2)), "whs_ns": _num(m.group(3)),
            "timing_met": wns is not None and wns >= 0}
