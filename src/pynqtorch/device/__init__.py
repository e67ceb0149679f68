"""The `zynq` PyTorch device (PrivateUse1, pure Python): storage, memory kernels, CPU fallback, report."""

from .allocator import HostAllocator, get_allocator, set_allocator
from .fallback import StrictModeError, strict
from .register import register
from .report import Report, report, reset_report

__all__ = ["HostAllocator", "Report", "StrictModeError", "get_allocator", "register", "report", "reset_report",
           "set_allocator", "strict"]
