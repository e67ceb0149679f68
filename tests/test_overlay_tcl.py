"""The overlays' Vivado Tcl, run under tclsh with recording stubs: cells, connections and addresses."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from pynqtorch.flows.overlay import render_overlay
from pynqtorch.flows.scaffold import new_overlay
from pynqtorch.hw.kernels import find_kernel, hw_root
from pynqtorch.hw.overlay import load_overlay, overlays

STUBS = Path(__file__).parent / "tcl" / "vivado_stubs.tcl"
pytestmark = pytest.mark.skipif(shutil.which("tclsh") is None, reason="tclsh is not installed")


def masters_of(kernel: str) -> list[str]:
    """The kernel's m_axi bundles, as its description names them (HLS's default bundle is 'gmem')."""
    desc = find_kernel(kernel).desc
    return list(dict.fromkeys(a.bundle or "gmem" for a in desc.args if a.interface == "m_axi"))


def tcl_list(items: list[str]) -> str:
    return "{" + " ".join(items) + "}"


def run_tcl(folder: Path, script: str, *, argv: tuple[str, ...] = (), ipdefs: list[str] | None = None,
            board_files: bool = True, run_status: str = "write_bitstream Complete!",
            work: Path) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    """Source `folder/script` under tclsh with the stubs; returns the process and the recorded calls."""
    spec = load_overlay(folder / "overlay.json")
    kernels = sorted({ip.kernel for ip in spec.ips})
    log = work / "calls.jsonl"
    log.unlink(missing_ok=True)
    masters = " ".join(f"{k} {tcl_list(masters_of(k))}" for k in kernels)
    driver = work / "driver.tcl"
    driver.write_text(
        f"source {{{STUBS}}}\n"
        f"set ::stub::log {{{log}}}\n"
        f"set ::stub::ipdefs {tcl_list(kernels if ipdefs is None else ipdefs)}\n"
        f"set ::stub::masters {{{masters}}}\n"
        f"set ::stub::board_files {int(board_files)}\n"
        f"set ::stub::run_status {{{run_status}}}\n"
        f"set argv {tcl_list(list(argv))}\n"
        f"source {{{folder / script}}}\n")
    proc = subprocess.run(["tclsh", str(driver)], capture_output=True, text=True, timeout=60, check=False)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def opt(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


class Design:
    """The block design the recorded calls build: cells, interface connections, nets, properties, addresses."""

    def __init__(self, calls: list[dict]) -> None:
        self.cmds = [c["cmd"] for c in calls]
        self.cells = {c["args"][-1]: opt(c["args"], "-vlnv") for c in calls if c["cmd"] == "create_bd_cell"}
        self.intf = {tuple(c["args"]) for c in calls if c["cmd"] == "connect_bd_intf_net"}
        self.nets = [set(c["args"]) for c in calls if c["cmd"] == "connect_bd_net"]
        self.props: dict[str, dict[str, str]] = defaultdict(dict)
        for c in calls:
            if c["cmd"] == "set_property" and c["args"][0] == "-dict":
                kv = c["args"][1].replace("{", "").replace("}", "").split()
                self.props[c["args"][2]].update(zip(kv[::2], kv[1::2]))
        self.addresses = [(opt(c["args"], "-target_address_space"), c["args"][-2], opt(c["args"], "-offset"),
                           opt(c["args"], "-range")) for c in calls if c["cmd"] == "assign_bd_address"]

    def same_net(self, a: str, b: str) -> bool:
        """Whether pins a and b are joined (nets sharing a pin are one net)."""
        group = {a}
        changed = True
        while changed:
            changed = False
            for net in self.nets:
                if net & group and not net <= group:
                    group |= net
                    changed = True
        return b in group


BUNDLED = sorted(overlays())  # every overlay folder shipped in hw/overlay


@pytest.fixture(params=BUNDLED)
def bundled(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A copy of a bundled overlay folder (run_vivado.tcl writes next to itself)."""
    src = hw_root() / "overlay" / request.param
    dst = tmp_path / "hw" / "overlay" / request.param
    shutil.copytree(src, dst)
    for k in {ip.kernel for ip in load_overlay(src).ips}:
        shutil.copytree(find_kernel(k).folder, tmp_path / "hw" / "kernel" / k)
    return dst


def test_bundled_overlays_are_discovered_and_name_the_brief_kernels() -> None:
    found = overlays()
    assert {"gemm_single", "gemm_dual", "gemm_packed"} <= set(found) and len(BUNDLED) >= 3
    assert [ip.kernel for ip in found["gemm_single"].spec.ips] == ["gemm_i8_dsp"]
    assert [(ip.kernel, ip.base, ip.hp_port) for ip in found["gemm_dual"].spec.ips] == [
        ("gemm_i8_dsp", "0x40000000", "HP0"), ("gemm_i8_fabric", "0x40010000", "HP1")]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_tcl_is_exactly_what_overlay_json_renders(name: str) -> None:
    # One fact in one place: the Tcl's IP table comes from overlay.json and cannot drift from it.
    folder = overlays()[name].folder
    for fname, text in render_overlay(load_overlay(folder / "overlay.json")).items():
        assert (folder / fname).read_text() == text, f"{fname} differs from what overlay.json renders"


def test_block_design_builds_ps_reset_control_and_data_paths(bundled: Path, tmp_path: Path) -> None:
    spec = load_overlay(bundled / "overlay.json")
    proc, calls = run_tcl(bundled, "block_design.tcl", work=tmp_path)
    assert proc.returncode == 0, proc.stderr
    d = Design(calls)
    assert calls[0] == {"cmd": "create_bd_design", "args": [spec.name]}
    assert d.cmds[-2:] == ["validate_bd_design", "save_bd_design"]

    # PS7 with the board preset, GP0, the HP ports in use, FCLK0 at the overlay clock.
    assert d.cells["processing_system7_0"].startswith("xilinx.com:ip:processing_system7:")
    auto = next(c for c in calls if c["cmd"] == "apply_bd_automation")
    assert 'apply_board_preset "1"' in opt(auto["args"], "-config")
    ps = d.props["processing_system7_0"]
    assert ps["CONFIG.PCW_USE_M_AXI_GP0"] == "1"
    assert ps["CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ"] == str(spec.clock_mhz)
    used_hp = {ip.hp_port for ip in spec.ips}
    for hp in ("HP0", "HP1", "HP2", "HP3"):
        assert (ps.get(f"CONFIG.PCW_USE_S_AXI_{hp}") == "1") == (hp in used_hp)

    # Reset block on FCLK0 / FCLK_RESET0_N.
    assert d.cells["rst_ps7_0_fclk0"].startswith("xilinx.com:ip:proc_sys_reset:")
    assert d.same_net("processing_system7_0/FCLK_RESET0_N", "rst_ps7_0_fclk0/ext_reset_in")
    assert d.same_net("processing_system7_0/FCLK_CLK0", "rst_ps7_0_fclk0/slowest_sync_clk")

    # Control: GP0 -> interconnect with one master per IP -> each IP's s_axi_CTRL.
    assert ("processing_system7_0/M_AXI_GP0", "ps7_0_axi_periph/S00_AXI") in d.intf
    assert d.props["ps7_0_axi_periph"]["CONFIG.NUM_MI"] == str(len(spec.ips))
    ctrl_targets = {b for a, b in d.intf if a.startswith("ps7_0_axi_periph/M")}
    assert ctrl_targets == {f"{ip.instance}/s_axi_CTRL" for ip in spec.ips}

    for ip in spec.ips:
        assert d.cells[ip.instance] == f"xilinx.com:hls:{ip.kernel}:1.0"
        assert d.same_net("processing_system7_0/FCLK_CLK0", f"{ip.instance}/ap_clk")
        assert d.same_net("rst_ps7_0_fclk0/peripheral_aresetn", f"{ip.instance}/ap_rst_n")
        # Data: every m_axi master of the IP -> a SmartConnect -> the PS HP port named in overlay.json.
        for bundle in masters_of(ip.kernel):
            pin = f"{ip.instance}/m_axi_{bundle}"
            sc_port = next(b for a, b in d.intf if a == pin)
            sc = sc_port.split("/")[0]
            assert d.cells[sc].startswith("xilinx.com:ip:smartconnect:")
            assert (f"{sc}/M00_AXI", f"processing_system7_0/S_AXI_{ip.hp_port}") in d.intf
            ddr = f"processing_system7_0/S_AXI_{ip.hp_port}/{ip.hp_port}_DDR_LOWOCM"
            assert (f"{ip.instance}/Data_m_axi_{bundle}", ddr, "0x00000000", "0x20000000") in d.addresses

    # Every clock pin of the infrastructure is on FCLK0.
    for pin in ["processing_system7_0/M_AXI_GP0_ACLK", "ps7_0_axi_periph/ACLK", "ps7_0_axi_periph/S00_ACLK",
                *[f"processing_system7_0/S_AXI_{hp}_ACLK" for hp in used_hp],
                *[f"ps7_0_axi_periph/M{i:02d}_ACLK" for i in range(len(spec.ips))],
                *[f"axi_smc_{hp.lower()}/aclk" for hp in used_hp]]:
        assert d.same_net("processing_system7_0/FCLK_CLK0", pin), pin

    # The control address map is exactly overlay.json's.
    ctrl = sorted((seg, off, rng) for space, seg, off, rng in d.addresses if space == "processing_system7_0/Data")
    assert ctrl == sorted((f"{ip.instance}/s_axi_CTRL/Reg", ip.base, ip.range) for ip in spec.ips)


def test_run_vivado_builds_and_copies_bit_and_hwh(bundled: Path, tmp_path: Path) -> None:
    spec = load_overlay(bundled / "overlay.json")
    proc, calls = run_tcl(bundled, "run_vivado.tcl", argv=("jobs=3",), work=tmp_path)
    assert proc.returncode == 0, proc.stderr
    d = Design(calls)
    create = next(c["args"] for c in calls if c["cmd"] == "create_project")
    assert opt(create, "-part") == "xc7z020clg400-1" and create[0] == spec.name
    repos = next(c["args"] for c in calls if c["cmd"] == "set_property" and c["args"][0] == "ip_repo_paths")
    assert sorted(repos[1].split()) == sorted({str((bundled / ".." / ".." / "kernel" / ip.kernel).resolve())
                                               for ip in spec.ips})  # one repository per kernel
    board = next(c["args"] for c in calls if c["cmd"] == "set_property" and c["args"][0] == "board_part")
    assert board[1] == "tul.com.tw:pynq-z2:part0:1.0"
    order = [c for c in d.cmds if c in ("update_ip_catalog", "create_bd_design", "save_bd_design", "make_wrapper",
                                         "launch_runs", "wait_on_run")]
    assert order == ["update_ip_catalog", "create_bd_design", "save_bd_design", "make_wrapper", "launch_runs",
                     "wait_on_run"]
    launch = next(c["args"] for c in calls if c["cmd"] == "launch_runs")
    assert launch == ["impl_1", "-to_step", "write_bitstream", "-jobs", "3"]
    assert (bundled / f"{spec.name}.bit").read_text() == f"bitstream of {spec.name}\n"
    assert (bundled / f"{spec.name}.hwh").read_text() == f"<MODULES hwh of {spec.name}/>\n"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ipdefs": []}, "is not in the IP catalog; export it first (pynqtorch hls"),
    ({"board_files": False}, "board files for tul.com.tw:pynq-z2:part0:1.0 are not installed"),
    ({"run_status": "route_design ERROR"}, "implementation did not finish (route_design ERROR)"),
    ({"argv": ("jobs=two",)}, "unknown argument 'jobs=two'"),
    ({"argv": ("ip_repo=/nonexistent/ip",)}, "IP repository /nonexistent/ip does not exist"),
])
def test_run_vivado_stops_with_a_clear_error(bundled: Path, tmp_path: Path, kwargs: dict, message: str) -> None:
    proc, _ = run_tcl(bundled, "run_vivado.tcl", work=tmp_path, **kwargs)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (bundled / f"{bundled.name}.bit").exists()


def test_new_overlay_folder_runs_under_the_stubs(tmp_path: Path) -> None:
    # Three IPs: the third lands on HP2, addresses follow on from 0x40000000.
    dest = tmp_path / "ovl"
    new_overlay("trio", ["gemm_i8_dsp", "gemm_i8_fabric", "gemm_i8_packed"], dest, clock_mhz=125)
    folder = dest / "trio"
    spec = load_overlay(folder / "overlay.json")
    assert [(ip.instance, ip.base, ip.hp_port) for ip in spec.ips] == [
        ("gemm_i8_dsp_0", "0x40000000", "HP0"), ("gemm_i8_fabric_0", "0x40010000", "HP1"),
        ("gemm_i8_packed_0", "0x40020000", "HP2")]
    repos = [f"ip_repo={find_kernel(ip.kernel).folder}" for ip in spec.ips]
    proc, calls = run_tcl(folder, "run_vivado.tcl", argv=tuple(repos), work=tmp_path)
    assert proc.returncode == 0, proc.stderr
    d = Design(calls)
    assert d.props["processing_system7_0"]["CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ"] == "125"
    assert d.props["processing_system7_0"]["CONFIG.PCW_USE_S_AXI_HP2"] == "1"
    assert (folder / "trio.bit").is_file() and (folder / "trio.hwh").is_file()
