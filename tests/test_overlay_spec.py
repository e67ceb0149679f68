"""overlay.json validation: every bad field is named with its file; discovery of overlay folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pynqtorch.hw.overlay import OverlayError, find_overlay, load_overlay, overlays

GOOD = {"name": "ov", "board": "pynq-z2", "part": "xc7z020clg400-1", "bitstream": "ov.bit", "clock_mhz": 100,
        "ips": [{"instance": "a_0", "kernel": "gemm_i8_dsp", "base": "0x40000000", "range": "0x10000",
                 "hp_port": "HP0"},
                {"instance": "b_0", "kernel": "gemm_i8_fabric", "base": "0x40010000", "range": "0x10000",
                 "hp_port": "HP1"}]}


def write(tmp_path: Path, data: object, folder: str = "ov") -> Path:
    d = tmp_path / folder
    d.mkdir(exist_ok=True)
    p = d / "overlay.json"
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def with_ip(i: int, **changes: str) -> dict:
    data = json.loads(json.dumps(GOOD))
    data["ips"][i].update(changes)
    return data


def test_good_overlay_loads(tmp_path: Path) -> None:
    spec = load_overlay(write(tmp_path, GOOD))
    assert [(ip.instance, ip.base_int, ip.range_int) for ip in spec.ips] == [
        ("a_0", 0x4000_0000, 0x1_0000), ("b_0", 0x4001_0000, 0x1_0000)]
    assert spec.ip("b_0").hp_port == "HP1"
    with pytest.raises(KeyError, match="no IP instance 'c_0'"):
        spec.ip("c_0")


@pytest.mark.parametrize(("data", "message"), [
    ("{not json", "invalid JSON at line 1"),
    ({**GOOD, "board": "zcu104"}, "field 'board'"),
    ({**GOOD, "bitstream": "other.bit"}, "bitstream must be 'ov.bit'"),
    ({**GOOD, "ips": []}, "field 'ips'"),
    ({**GOOD, "colour": "red"}, "field 'colour': Extra inputs are not permitted"),
    ({**GOOD, "clock_mhz": 0}, "field 'clock_mhz'"),
    (with_ip(0, base="0x30000000"), "field 'ips[0].base': Value error, base 0x30000000 is outside"),
    (with_ip(0, base="forty"), "field 'ips[0].base': Value error, base 'forty' is not a hex number"),
    (with_ip(1, range="0x3000"), "field 'ips[1].range': Value error, range 0x3000 is not a power of two"),
    (with_ip(1, base="0x40008000"), "base 0x40008000 is not aligned to its range 0x10000"),
    (with_ip(1, instance="a_0"), "duplicate instance names"),
    (with_ip(1, base="0x40000000", range="0x1000"), "address windows of b_0 and a_0 overlap"),
    (with_ip(0, hp_port="HP7"), "field 'ips[0].hp_port'"),
    (with_ip(0, kernel="gemm-i8"), "field 'ips[0].kernel': Value error, 'gemm-i8' is not a C identifier"),
])
def test_bad_overlay_names_file_and_field(tmp_path: Path, data: object, message: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(OverlayError) as e:
        load_overlay(path)
    assert str(path) in str(e.value)
    assert message in str(e.value)


def test_name_must_match_folder(tmp_path: Path) -> None:
    with pytest.raises(OverlayError, match="'ov' differs from its folder name 'elsewhere'"):
        load_overlay(write(tmp_path, GOOD, folder="elsewhere"))


def test_missing_file_and_unknown_overlay(tmp_path: Path) -> None:
    with pytest.raises(OverlayError, match="no such file"):
        load_overlay(tmp_path / "nothing" / "overlay.json")
    with pytest.raises(OverlayError, match="unknown overlay 'gemm_triple'.*bundled: .*gemm_dual"):
        find_overlay("gemm_triple")


def test_discovery_in_a_folder_and_by_path(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    (tmp_path / "not_an_overlay").mkdir()
    found = overlays(tmp_path)
    assert list(found) == ["ov"]
    info = find_overlay(tmp_path / "ov")
    assert info.bitstream == (tmp_path / "ov" / "ov.bit").resolve()
    assert info.hwh.name == "ov.hwh"
