"""`pynqtorch hls` / `pynqtorch vivado` against fake tools on PATH that run our Tcl under tclsh with stubs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pynqtorch.cli import app
from pynqtorch.flows.reports import ReportError, parse_csynth_rpt, parse_csynth_xml
from pynqtorch.hw.kernels import find_kernel, hw_root

TCL = Path(__file__).parent / "tcl"
pytestmark = pytest.mark.skipif(shutil.which("tclsh") is None, reason="tclsh is not installed")

CSYNTH_XML = """<?xml version="1.0" encoding="UTF-8"?>
<profile>
  <ReportVersion><Version>2023.2</Version></ReportVersion>
  <UserAssignments>
    <unit>ns</unit><ProductFamily>zynq</ProductFamily><Part>xc7z020-clg400-1</Part>
    <TopModelName>{top}</TopModelName><TargetClockPeriod>10.00</TargetClockPeriod>
    <ClockUncertainty>2.70</ClockUncertainty><FlowTarget>vivado</FlowTarget>
  </UserAssignments>
  <PerformanceEstimates>
    <SummaryOfTimingAnalysis><unit>ns</unit><EstimatedClockPeriod>7.256</EstimatedClockPeriod></SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency>
      <unit>clock cycles</unit><Best-caseLatency>197127</Best-caseLatency>
      <Average-caseLatency>197127</Average-caseLatency><Worst-caseLatency>197127</Worst-caseLatency>
      <Interval-min>197128</Interval-min><Interval-max>197128</Interval-max>
    </SummaryOfOverallLatency>
  </PerformanceEstimates>
  <AreaEstimates>
    <Resources><BRAM_18K>6</BRAM_18K><DSP>256</DSP><FF>41877</FF><LUT>38311</LUT><URAM>0</URAM></Resources>
    <AvailableResources><BRAM_18K>280</BRAM_18K><DSP>220</DSP><FF>106400</FF><LUT>53200</LUT><URAM>0</URAM>
    </AvailableResources>
  </AreaEstimates>
</profile>
"""

CSYNTH_RPT = """\
================================================================
== Vitis HLS Report for 'gemm_i8_fabric'
================================================================
* Date:           Mon Jan  1 00:00:00 2024
* Project:        prj_gemm_i8_fabric
* Solution:       sol1 (Vivado IP Flow Target)
* Product family: zynq
* Target device:  xc7z020-clg400-1

================================================================
== Performance Estimates
================================================================
+ Timing:
    * Summary:
    +--------+----------+----------+------------+
    |  Clock |  Target  | Estimated| Uncertainty|
    +--------+----------+----------+------------+
    |ap_clk  |  10.00 ns|  8.112 ns|     2.70 ns|
    +--------+----------+----------+------------+

+ Latency:
    * Summary:
    +---------+---------+----------+----------+--------+--------+---------+
    |  Latency (cycles) |  Latency (absolute) |     Interval    | Pipeline|
    |   min   |   max   |    min   |    max   |   min  |   max  |   Type  |
    +---------+---------+----------+----------+--------+--------+---------+
    |   197131|   197131|  1.971 ms|  1.971 ms|  197132|  197132|       no|
    +---------+---------+----------+----------+--------+--------+---------+

================================================================
== Utilization Estimates
================================================================
* Summary:
+---------------------+---------+------+---------+---------+-----+
|         Name        | BRAM_18K|  DSP |    FF   |   LUT   | URAM|
+---------------------+---------+------+---------+---------+-----+
|DSP                  |        -|     -|        -|        -|    -|
|Total                |        6|     0|    44120|    51873|    0|
+---------------------+---------+------+---------+---------+-----+
|Available            |      280|   220|   106400|    53200|    0|
+---------------------+---------+------+---------+---------+-----+
"""

UTILIZATION_RPT = """\
1. Slice Logic
--------------

+----------------------------+-------+-------+------------+-----------+-------+
|          Site Type         |  Used | Fixed | Prohibited | Available | Util% |
+----------------------------+-------+-------+------------+-----------+-------+
| Slice LUTs                 | 40233 |     0 |          0 |     53200 | 75.63 |
|   LUT as Logic             | 39101 |     0 |          0 |     53200 | 73.50 |
| Slice Registers            | 47012 |     0 |          0 |    106400 | 44.18 |
+----------------------------+-------+-------+------------+-----------+-------+

3. Memory
---------

+-------------------+------+-------+------------+-----------+-------+
|     Site Type     | Used | Fixed | Prohibited | Available | Util% |
+-------------------+------+-------+------------+-----------+-------+
| Block RAM Tile    |    4 |     0 |          0 |       140 |  2.86 |
+-------------------+------+-------+------------+-----------+-------+

4. DSP
------

+----------------+------+-------+------------+-----------+--------+
|    Site Type   | Used | Fixed | Prohibited | Available |  Util% |
+----------------+------+-------+------------+-----------+--------+
| DSPs           |  220 |     0 |          0 |       220 | 100.00 |
+----------------+------+-------+------------+-----------+--------+
"""

TIMING_RPT = """\
------------------------------------------------------------------------------------------------
| Design Timing Summary
| ---------------------
------------------------------------------------------------------------------------------------

    WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)  THS Failing Endpoints
    -------      -------  ---------------------  -------------------      -------      -------  ---------------------
     -0.412       -3.951                     17               101232        0.021        0.000                      0
"""

FAKE = """#!{python}
# A fake {tool}: records its argument list, then runs the Tcl it was given under tclsh with recording stubs.
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_RECORD"], "a") as fh:
    fh.write(json.dumps({{"tool": "{tool}", "argv": args, "cwd": os.getcwd()}}) + "\\n")
tool = "{tool}"
if tool == "vitis-run":
    assert args[:3] == ["--mode", "hls", "--tcl"], args
    script, tclargs = args[3], []
elif tool == "vitis_hls":
    assert args[0] == "-f", args
    script, tclargs = args[1], args[args.index("-tclargs") + 1:] if "-tclargs" in args else []
else:
    assert args[:3] == ["-mode", "batch", "-source"], args
    script, tclargs = args[3], args[args.index("-tclargs") + 1:] if "-tclargs" in args else []
driver = os.path.join(os.environ["FAKE_WORK"], "fake_driver.tcl")
with open(driver, "w") as fh:
    fh.write(os.environ["FAKE_PRELUDE"])
    fh.write("set argv {{" + " ".join(tclargs) + "}}\\nset argc " + str(len(tclargs)) + "\\n")
    fh.write("source {{" + script + "}}\\n")
rc = subprocess.run(["tclsh", driver]).returncode
sys.exit(int(os.environ.get("FAKE_RC", rc)))
"""


def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tools: list[str], prelude: str) -> Path:
    """Put fake `tools` (and nothing else of the AMD kind) on PATH; returns the record file."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for tool in tools:
        exe = bindir / tool
        exe.write_text(FAKE.format(python=sys.executable, tool=tool))
        exe.chmod(0o755)
    for needed in ("tclsh",):
        (bindir / needed).symlink_to(shutil.which(needed))
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setenv("FAKE_RECORD", str(record))
    monkeypatch.setenv("FAKE_WORK", str(tmp_path))
    monkeypatch.setenv("FAKE_PRELUDE", prelude)
    return record


def kernel_copy(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / "kernels" / name
    shutil.copytree(find_kernel(name).folder, dst)
    return dst


def hls_prelude(tmp_path: Path, top: str) -> str:
    xml = tmp_path / "sample_csynth.xml"
    xml.write_text(CSYNTH_XML.format(top=top))
    return f"source {{{TCL / 'hls_stubs.tcl'}}}\nset ::stub::csynth_xml {{{xml}}}\n"


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("tool", ["vitis-run", "vitis_hls"])
def test_hls_runs_the_kernels_script_with_the_chosen_steps(tool: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    folder = kernel_copy(tmp_path, "gemm_i8_dsp")
    record = fake_tools(tmp_path, monkeypatch, [tool], hls_prelude(tmp_path, "gemm_i8_dsp"))
    r = CliRunner().invoke(app, ["hls", str(folder), "--csynth", "--csim", "--export", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    (rec,) = records(record)
    assert rec["tool"] == tool and Path(rec["cwd"]) == folder
    if tool == "vitis_hls":
        assert rec["argv"] == ["-f", str(folder / "run_hls.tcl"), "-tclargs", "csim", "csynth", "export"]
    else:
        assert rec["argv"][:3] == ["--mode", "hls", "--tcl"]
    # The kernel's own run_hls.tcl ran the steps in flow order, in its folder.
    log = Path(out["log"]).read_text()
    ran = [line.split()[1] for line in log.splitlines() if line.startswith("STUB ") and "_design" in line]
    assert ran == ["csim_design", "csynth_design", "export_design"]
    assert out["steps_seen"] == ["csim", "csynth", "export"]
    rep = out["reports"]["csynth"]
    assert rep["top"] == "gemm_i8_dsp"
    assert rep["latency_cycles"] == {"min": 197127, "max": 197127}
    assert rep["interval_cycles"] == {"min": 197128, "max": 197128}
    assert rep["clock_estimated_ns"] == 7.256
    assert rep["resources"] == {"BRAM_18K": 6, "DSP": 256, "FF": 41877, "LUT": 38311, "URAM": 0}
    assert Path(rep["source"]) == folder / "prj_gemm_i8_dsp" / "sol1" / "syn" / "report" / "csynth.xml"


def test_hls_default_steps_and_progress_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = kernel_copy(tmp_path, "gemm_i8_fabric")
    record = fake_tools(tmp_path, monkeypatch, ["vitis_hls"], hls_prelude(tmp_path, "gemm_i8_fabric"))
    r = CliRunner().invoke(app, ["hls", str(folder)])
    assert r.exit_code == 0, r.output
    assert records(record)[0]["argv"][-3:] == ["-tclargs", "csim", "csynth"]
    assert "Finished Command csynth_design" in r.output  # the tool's output is streamed
    assert "latency_cycles" in r.output and "197127" in r.output


def test_hls_tool_failure_is_reported_with_its_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = kernel_copy(tmp_path, "gemm_i8_dsp")
    fake_tools(tmp_path, monkeypatch, ["vitis-run"], hls_prelude(tmp_path, "gemm_i8_dsp"))
    monkeypatch.setenv("FAKE_RC", "3")
    r = CliRunner().invoke(app, ["hls", str(folder), "--csim", "-q"])
    assert r.exit_code == 3
    assert "HLS failed with exit code 3; see" in r.output and "pynqtorch_hls.log" in r.output


def test_hls_without_tools_names_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    r = CliRunner().invoke(app, ["hls", "gemm_i8_dsp"])
    assert r.exit_code == 2
    assert "neither vitis-run nor vitis_hls is on PATH" in r.output and "install AMD Vitis" in r.output


@pytest.mark.parametrize(("args", "message"), [
    (["hls", "no_such_kernel"], "unknown kernel 'no_such_kernel'"),
    (["hls", "gemm_i8_dsp", "--cosim"], "cosim and export need csynth in the same run"),
    (["vivado", "no_such_overlay"], "unknown overlay 'no_such_overlay'"),
])
def test_bad_requests_fail_before_any_tool_runs(args: list[str], message: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    record = fake_tools(tmp_path, monkeypatch, ["vitis-run", "vivado"], "")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2
    assert message in " ".join(r.output.split())
    assert not record.exists()


def test_vivado_builds_the_overlay_and_collects_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "gemm_dual"
    shutil.copytree(hw_root() / "overlay" / "gemm_dual", folder)
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "utilization.rpt").write_text(UTILIZATION_RPT)
    (samples / "timing_summary.rpt").write_text(TIMING_RPT)
    prelude = (f"source {{{TCL / 'vivado_stubs.tcl'}}}\nset ::stub::log {{{tmp_path / 'calls.jsonl'}}}\n"
               "set ::stub::ipdefs {gemm_i8_dsp gemm_i8_fabric}\n"
               "set ::stub::masters {gemm_i8_dsp {gmem0 gmem1 gmem2} gemm_i8_fabric {gmem0 gmem1 gmem2}}\n"
               f"set ::stub::samples {{{samples}}}\n")
    record = fake_tools(tmp_path, monkeypatch, ["vivado"], prelude)
    r = CliRunner().invoke(app, ["vivado", str(folder), "--jobs", "2", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    (rec,) = records(record)
    repos = [f"ip_repo={find_kernel(k).folder}" for k in ("gemm_i8_dsp", "gemm_i8_fabric")]
    assert rec["argv"] == ["-mode", "batch", "-source", str(folder / "run_vivado.tcl"), "-tclargs", "jobs=2", *repos]
    assert out["steps_seen"] == ["project", "block design", "synthesis", "implementation", "bitstream"]
    assert out["reports"]["outputs"] == {"gemm_dual.bit": str(folder / "gemm_dual.bit"),
                                         "gemm_dual.hwh": str(folder / "gemm_dual.hwh")}
    util = out["reports"]["utilization"]
    assert util["LUT"] == {"used": 40233, "available": 53200, "percent": 75.63}
    assert util["FF"]["used"] == 47012 and util["BRAM_36K"]["used"] == 4 and util["DSP"]["percent"] == 100.0
    assert out["reports"]["timing"] == {"wns_ns": -0.412, "tns_ns": -3.951, "whs_ns": 0.021, "timing_met": False}


def test_vivado_without_the_tool_names_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    r = CliRunner().invoke(app, ["vivado", "gemm_single"])
    assert r.exit_code == 2
    assert "vivado is not on PATH" in r.output and "install AMD Vivado" in r.output


def test_csynth_text_report_is_parsed(tmp_path: Path) -> None:
    p = tmp_path / "gemm_i8_fabric_csynth.rpt"
    p.write_text(CSYNTH_RPT)
    rep = parse_csynth_rpt(p)
    assert rep["top"] == "gemm_i8_fabric" and rep["part"] == "xc7z020-clg400-1"
    assert (rep["clock_target_ns"], rep["clock_estimated_ns"]) == (10.0, 8.112)
    assert rep["latency_cycles"] == {"min": 197131, "max": 197131}
    assert rep["interval_cycles"] == {"min": 197132, "max": 197132}
    assert rep["resources"] == {"BRAM_18K": 6, "DSP": 0, "FF": 44120, "LUT": 51873, "URAM": 0}
    assert rep["available"]["LUT"] == 53200


@pytest.mark.parametrize("parser", [parse_csynth_rpt, parse_csynth_xml])
def test_unreadable_reports_name_the_file(parser: object, tmp_path: Path) -> None:
    p = tmp_path / "broken_report"
    p.write_text("<profile>nothing useful</profile>")
    with pytest.raises(ReportError, match="broken_report"):
        parser(p)  # type: ignore[operator]
