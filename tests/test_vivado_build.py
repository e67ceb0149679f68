"""A Vivado build (`<name>.bit` + `<name>.hwh`) checked against the kernel descriptions, on real handoffs and on
Vivado-shaped folders of the bundled kernels; every bad input is an error naming the file and the expectation."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from pynqtorch.hw.hwh import HandoffError, read_hwh
from pynqtorch.hw.overlay import find_overlay
from pynqtorch.hw.vivado import bit_header, check_build, handoff_problems
from pynqtorch.sim.handoff import hwh_xml

DATA = Path(__file__).parent / "data" / "hwh"
# The header of a real Vivado 2024.1 bitstream for the PYNQ-Z2's part, up to its body length field.
REAL_HEADER = (DATA / "dpu.bit.header").read_bytes()[:-4]


def vivado_bit(path: Path, body_bytes: int = 4096, part: bytes = b"7z020clg400") -> Path:
    """A .bit with a real Vivado header (its part swapped for `part` if asked) and an arbitrary body."""
    header = REAL_HEADER.replace(b"b\x00\x0c7z020clg400\x00", b"b" + struct.pack(">h", len(part) + 1) + part + b"\x00")
    path.write_bytes(header + struct.pack(">i", body_bytes) + (bytes(range(256)) * (body_bytes // 256 + 1))[:body_bytes])
    return path


def vivado_folder(tmp_path: Path, overlay: str = "gemm_dual", name: str = "mygemm") -> Path:
    """A folder holding only what Vivado writes for a bundled overlay: `<name>.bit` + `<name>.hwh`."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / f"{name}.hwh").write_text(hwh_xml(find_overlay(overlay)))
    vivado_bit(folder / f"{name}.bit")
    return folder


def test_real_bit_header_is_read_and_a_truncated_body_refused(tmp_path: Path) -> None:
    bit = vivado_bit(tmp_path / "x.bit", body_bytes=4045564)  # the length the real file declares
    header = bit_header(bit)
    assert (header["design"], header["part"], header["date"], header["version"]) == (
        "dpu_wrapper", "7z020clg400", "2025/06/03", "Version=2024.1")
    truncated = tmp_path / "t.bit"
    truncated.write_bytes((DATA / "dpu.bit.header").read_bytes())  # the header alone: the body is missing
    with pytest.raises(HandoffError, match=r"t.bit: not a complete Xilinx bitstream"):
        bit_header(truncated)
    junk = tmp_path / "j.bit"
    junk.write_bytes(b"this is not a bitstream")
    with pytest.raises(HandoffError, match=r"j.bit: not a complete Xilinx bitstream"):
        bit_header(junk)


def test_vivado_folder_of_bundled_kernels_checks_clean(tmp_path: Path) -> None:
    folder = vivado_folder(tmp_path)
    handoff, ips = check_build(folder / "mygemm.bit")
    assert handoff.pl_clocks_mhz == {0: 100.0}
    assert [(ip.instance, ip.kernel.name, ip.base) for ip in ips] == [
        (ip.instance, ip.kernel, ip.base_int) for ip in find_overlay("gemm_dual").ips]


@pytest.mark.parametrize(("file", "expected"), [
    ("resizer.hwh", (r"IP resize_accel_0 \(xilinx.com:hls:resize_accel:1.0\): no kernel description with top "
                     r"function 'resize_accel' on the kernel path")),
    ("pynqrypt.hwh", r"IP pynqrypt_encrypt_0 \(xilinx.com:hls:pynqrypt_encrypt:1.0\): no kernel description"),
    ("dpu.hwh", r"dpu.hwh has no HLS IP \(xilinx.com:hls:\*\); memory-mapped IPs: \['axi_dma_0', 'axi_gpio_0'\]"),
])
def test_real_handoffs_name_the_ips_without_a_kernel(file: str, expected: str) -> None:
    ips, problems = handoff_problems(read_hwh(DATA / file))
    assert ips == []
    assert any(re.search(expected, p) for p in problems), problems


def test_bad_builds_name_the_file_and_every_problem(tmp_path: Path) -> None:
    folder = vivado_folder(tmp_path)
    hwh, bit = folder / "mygemm.hwh", folder / "mygemm.bit"
    text = hwh.read_text()
    # Two offsets that disagree with the description (one IP each), and another part.
    hwh.write_text(text.replace('<PROPERTY NAME="ADDRESS_OFFSET" VALUE="28" />', '<PROPERTY NAME="ADDRESS_OFFSET" '
                                'VALUE="24" />').replace('DEVICE="7z020"', 'DEVICE="7z010"'))
    with pytest.raises(HandoffError) as e:
        check_build(bit)
    msg = str(e.value)
    assert msg.startswith(f"{folder}: the Vivado build does not match the kernel descriptions")
    assert "mygemm.hwh is built for part xc7z010clg400-1, expected xc7z020clg400-1 (PYNQ-Z2)" in msg
    assert "mygemm.bit is for part '7z020clg400' but mygemm.hwh for xc7z010clg400-1" in msg
    dual = find_overlay("gemm_dual")
    for ip in dual.ips:  # each IP's own offset, named with the IP and both offsets
        assert f"IP {ip.instance}: argument 'in2' is at 0x18 in mygemm.hwh but 0x1c in {dual.kernels[ip.instance].folder}" in msg
    # An HLS IP whose kernel is not on the kernel path.
    hwh.write_text(text.replace("xilinx.com:hls:gemm_i8_dsp:1.0", "xilinx.com:hls:my_conv:1.0"))
    with pytest.raises(HandoffError, match=r"IP gemm_i8_dsp_0 \(xilinx.com:hls:my_conv:1.0\): no kernel description "
                                           r"with top function 'my_conv'"):
        check_build(bit)
    # Not XML, truncated XML, no .hwh at all.
    for content in ("garbage", text[: len(text) // 2]):
        hwh.write_text(content)
        with pytest.raises(HandoffError, match=r"mygemm.hwh: not a Vivado hardware handoff \(expected complete XML\)"):
            check_build(bit)
    hwh.unlink()
    with pytest.raises(HandoffError, match=r"mygemm.bit: no hardware handoff mygemm.hwh beside it"):
        check_build(bit)
