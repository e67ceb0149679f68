"""pynqtorch: HLS-accelerated PyTorch for PYNQ boards.

Importing registers the `zynq` device. GEMM-family ops on zynq tensors run on the active target's kernel
(`ref`, `csim` or `board`); every other op runs on CPU through a counted fallback.
"""

from __future__ import annotations

from .device import StrictModeError, register, report, reset_report, strict

__version__ = "0.1.0"

register()

__all__ = ["StrictModeError", "__version__", "report", "reset_report", "strict"]
