"""The `board` target (`target.BoardTarget`): connections to boards (`connection`, `device`), one IP as a
compute unit (`unit`), weight tiles kept on the board (`weights`), loading and checking overlays (`overlay`)."""

from .connection import BoardError
from .device import board_devices, close_board_devices
from .target import BoardTarget, interchangeable
from .unit import KernelTimeout, VerifyError

__all__ = ["BoardError", "BoardTarget", "KernelTimeout", "VerifyError", "board_devices", "close_board_devices",
           "interchangeable"]
