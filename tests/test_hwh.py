"""Reading real Vivado handoffs (tests/data/hwh, see its README): expectations written from the files.

Each file is read twice: with pynq's own metadata parser and with the XML fallback (only a REGISTER's own
PROPERTY elements); both must give what the file says.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pynqtorch.hw.hwh import HandoffError, axi_lite_interface, hls_name, hls_registers, read_hwh

DATA = Path(__file__).parent / "data" / "hwh"
PARSERS = pytest.mark.parametrize("use_pynq", [True, False], ids=["pynq", "xml"])


@PARSERS
def test_resizer_hls_ip_with_fields_nesting(use_pynq: bool) -> None:
    h = read_hwh(DATA / "resizer.hwh", use_pynq=use_pynq)
    assert h.parser == ("pynq" if use_pynq else "xml")
    assert (h.part, h.vivado, h.design) == ("xc7z020clg400-1", "2019.2", "resizer")
    assert h.pl_clocks_mhz == {0: 100.0}
    assert set(h.ips) == {"axi_dma_0", "resize_accel_0"}
    ip = h.ip("resize_accel_0")
    assert (ip.vlnv, ip.hls_top, ip.base, ip.range) == ("xilinx.com:hls:resize_accel:1.0", "resize_accel",
                                                         0x43C0_0000, 0x1_0000)
    # The bundle `AXILiteS` names the interface; CTRL's FIELDS carry bit offsets 0..8 that are not registers.
    assert ip.interface == axi_lite_interface("AXILiteS") == "s_axi_AXILiteS"
    assert ip.registers == {"CTRL": 0x0, "GIER": 0x4, "IP_IER": 0x8, "IP_ISR": 0xC, "src_rows": 0x10,
                            "src_cols": 0x18, "dst_rows": 0x20, "dst_cols": 0x28}
    assert h.ip("axi_dma_0").is_hls is False and h.ip("axi_dma_0").base == 0x4040_0000
    assert set(h.hls_ips) == {"resize_accel_0"}


@PARSERS
def test_pynqrypt_vitis_hls_pointers_and_wide_scalars(use_pynq: bool) -> None:
    h = read_hwh(DATA / "pynqrypt.hwh", use_pynq=use_pynq)
    assert (h.part, h.vivado, h.board) == ("xc7z020clg400-1", "2022.2", "tul.com.tw:pynq-z2:part0:1.0")
    assert h.pl_clocks_mhz == {0: 100.0}
    ip = h.ip("pynqrypt_encrypt_0")
    assert (ip.hls_top, ip.base, ip.range, ip.interface) == ("pynqrypt_encrypt", 0x4000_0000, 0x1_0000,
                                                             "s_axi_control")
    regs = ip.registers
    assert [regs[r] for r in hls_registers("plaintext", pointer=True)] == [0x40, 0x44]
    assert [regs[r] for r in hls_registers("ciphertext", pointer=True)] == [0x4C, 0x50]
    assert [regs[r] for r in hls_registers("key", pointer=False, bits=128)] == [0x10, 0x14, 0x18, 0x1C]
    assert [regs[r] for r in hls_registers("nonce", pointer=False, bits=96)] == [0x24, 0x28, 0x2C]
    assert [regs[r] for r in hls_registers("plaintext_length", pointer=False, bits=64)] == [0x34, 0x38]
    assert (regs["CTRL"], regs["GIER"], regs["IP_IER"], regs["IP_ISR"]) == (0, 4, 8, 0xC)


@PARSERS
def test_dpu_overlay_without_hls_ips(use_pynq: bool) -> None:
    h = read_hwh(DATA / "dpu.hwh", use_pynq=use_pynq)
    assert (h.part, h.vivado) == ("xc7z020clg400-1", "2024.1")
    assert set(h.ips) == {"axi_dma_0", "axi_gpio_0"} and h.hls_ips == {}
    gpio = h.ip("axi_gpio_0")
    assert (gpio.vlnv, gpio.base, gpio.range, gpio.interface) == ("xilinx.com:ip:axi_gpio:2.0", 0x4120_0000,
                                                                  0x1_0000, "S_AXI")
    assert {r: gpio.registers[r] for r in ("GPIO_DATA", "GPIO_TRI", "GIER", "IP_IER", "IP_ISR")} == {
        "GPIO_DATA": 0x0, "GPIO_TRI": 0x4, "GIER": 0x11C, "IP_IER": 0x128, "IP_ISR": 0x120}
    with pytest.raises(HandoffError, match=r"dpu.hwh: no IP 'gemm_0'; its memory-mapped IPs are"):
        h.ip("gemm_0")


def test_vitis_hls_naming() -> None:
    assert hls_name("out") == "out_r" and hls_name("in") == "in_r" and hls_name("label") == "label_r"
    assert hls_name("in1") == "in1" and hls_name("a") == "a"
    assert hls_registers("out", pointer=True) == ["out_r_1", "out_r_2"]
    assert hls_registers("m", pointer=False) == ["m"]


@pytest.mark.parametrize(("content", "expected"), [
    (b"\x00\x01 not xml at all", "not a Vivado hardware handoff (expected complete XML)"),
    ((DATA / "resizer.hwh").read_bytes()[:20000], "not a Vivado hardware handoff (expected complete XML)"),
    (b"<?xml version='1.0'?><project/>", "expected an EDKSYSTEM with SYSTEMINFO and MODULES, found <project>"),
    (b"<EDKSYSTEM><SYSTEMINFO DEVICE='7z020'/><MODULES/></EDKSYSTEM>", "SYSTEMINFO lacks PACKAGE"),
])
def test_bad_handoffs_name_the_file_and_the_expectation(tmp_path: Path, content: bytes, expected: str) -> None:
    bad = tmp_path / "bad.hwh"
    bad.write_bytes(content)
    for use_pynq in (True, False):
        with pytest.raises(HandoffError, match=rf"{bad}: .*{expected.replace('(', '.').replace(')', '.')}"):
            read_hwh(bad, use_pynq=use_pynq)
    with pytest.raises(HandoffError, match="no such hardware handoff"):
        read_hwh(tmp_path / "missing.hwh")


def test_virtual_board_handoff_is_shaped_like_vivados(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    from pynqtorch.hw.overlay import find_overlay
    from pynqtorch.sim.handoff import hwh_xml

    path = tmp_path / "gemm_single.hwh"
    path.write_text(hwh_xml(find_overlay("gemm_single")))
    real = ET.parse(DATA / "pynqrypt.hwh").getroot().find(".//MODULE[@INSTANCE='pynqrypt_encrypt_0']")
    ours = ET.parse(path).getroot().find(".//MODULE[@INSTANCE='gemm_i8_dsp_0']")
    assert real is not None and ours is not None

    def props(el: ET.Element, tag: str) -> set[str]:
        return {p.get("NAME", "") for e in el.iter(tag) for p in e.findall("PROPERTY")}

    assert props(ours, "REGISTER") <= props(real, "REGISTER")
    assert props(ours, "FIELD") <= props(real, "FIELD")
    assert all(reg.find("FIELDS/FIELD") is not None for reg in ours.iter("REGISTER"))  # nested as Vivado does
    for use_pynq in (True, False):
        want = read_hwh(DATA / "pynqrypt.hwh", use_pynq=use_pynq).ip("pynqrypt_encrypt_0").registers
        ip = read_hwh(path, use_pynq=use_pynq).ip("gemm_i8_dsp_0")
        assert (ip.vlnv, ip.interface) == ("xilinx.com:hls:gemm_i8_dsp:1.0", axi_lite_interface("CTRL"))
        assert {r: ip.registers[r] for r in ("CTRL", "GIER", "IP_IER", "IP_ISR")} == {
            r: want[r] for r in ("CTRL", "GIER", "IP_IER", "IP_ISR")}
        assert (ip.registers["in1_1"], ip.registers["in2_2"], ip.registers["out_r_1"]) == (0x10, 0x20, 0x28)
