"""pynqtorch: HLS-accelerated PyTorch for PYNQ boards.

Importing registers the `zynq` device. GEMM-family ops on zynq tensors run on the active target's kernel
(`ref`, `csim` or `board`); every other op runs on CPU through a counted fallback.
"""

from __future__ import annotations

from . import lowering, ops  # noqa: F401 -- lowering: the ops compiled graphs call
from .device import StrictModeError, register, strict
from .engine import QuantConfig, Scheme, get_quant_config, quant_config, register_scheme, set_quant_config
from .hw.kernels import add_kernel_path
from .modules import module_quant_config, set_module_quant_config
from .reporting import report, reset_report
from .targets.registry import use

__version__ = "0.1.0"

ops.register()  # first: the device's CPU fallback leaves ops that have a zynq kernel alone
register()

__all__ = ["QuantConfig", "Scheme", "StrictModeError", "__version__", "add_kernel_path", "get_quant_config",
           "module_quant_config", "quant_config", "register_scheme", "report", "reset_report",
           "set_module_quant_config", "set_quant_config", "strict", "use"]
