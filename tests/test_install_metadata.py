"""The install metadata keeps what a PYNQ v3.1 board image already has: pynq 3.1.x and its torch.

A fresh virtual environment gets pynq 3.1.x from the package registry and the torch CPU wheel (the stand-in
for the board's torch from `sw/`); `pip install --dry-run --report` of `.[board]` must change neither, while
`.[remote]` (PYNQ.remote needs pynq >= 4) must ask to upgrade pynq — so the check can fail.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.install, pytest.mark.timeout(3600)]


def _dry_run(pip: list[str], extra: str, report: Path) -> dict[str, str]:
    """Distribution name -> version that `pip install --dry-run` of `.[extra]` would install."""
    subprocess.run([*pip, "install", "--dry-run", "--quiet", "--report", str(report), f"{REPO}[{extra}]"],
                   check=True, timeout=1800)
    return {item["metadata"]["name"].lower(): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]}


def test_board_extra_keeps_the_images_pynq_and_torch(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    torch = importlib.metadata.version("torch").split("+")[0]
    subprocess.run([*pip, "install", "--quiet", "pynq>=3.1,<3.2", f"torch=={torch}"], check=True, timeout=3600)
    listed = subprocess.run([*pip, "list", "--format=json"], check=True, capture_output=True, text=True).stdout
    before = {p["name"].lower(): p["version"] for p in json.loads(listed)}
    assert before["pynq"].startswith("3.1."), before["pynq"]

    board = _dry_run(pip, "board", tmp_path / "board.json")
    print(f"\nvenv: pynq {before['pynq']}, torch {before['torch']}; "
          f"pip install --dry-run '.[board]' would install: {sorted(board.items())}")
    assert "pynq" not in board and "torch" not in board, board
    assert "pynqtorch" in board and "hls4ml" not in board

    remote = _dry_run(pip, "remote", tmp_path / "remote.json")
    assert remote.get("pynq", "0").split(".")[0] >= "4", remote

    # Installed for real: the image's pynq and torch stay, pynqtorch imports, and PYNQ.remote (pynq >= 4)
    # is refused with one clear message instead of failing deep inside pynq 3.1.
    subprocess.run([*pip, "install", "--quiet", f"{REPO}[board]"], check=True, timeout=3600)
    listed = subprocess.run([*pip, "list", "--format=json"], check=True, capture_output=True, text=True).stdout
    after = {p["name"].lower(): p["version"] for p in json.loads(listed)}
    assert (after["pynq"], after["torch"]) == (before["pynq"], before["torch"])
    probe = ("from pynqtorch.targets.board.connection import BoardAddress, open_pynq_device\n"
             "open_pynq_device(BoardAddress(0, '127.0.0.1', 7999))")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, timeout=600,
                       check=False, cwd=tmp_path)
    assert r.returncode != 0
    assert f"PYNQ_REMOTE_DEVICES needs pynq >= 4.0 (PYNQ.remote) on this machine; found pynq {before['pynq']}" in \
        r.stderr, r.stderr[-2000:]
