"""`torch.save` / `torch.load` of zynq tensors through PyTorch's own storage location tags.

Saving needs nothing extra: a zynq storage has a real data pointer and size, PyTorch tags it `zynq:0` and
copies it to CPU through `_copy_from`. Loading a storage tagged `zynq[:N]` (or any storage with
`map_location="zynq"`) is registered here, ahead of PyTorch's generic PrivateUse1 handler, which would
allocate through a C++ allocator a pure-Python backend does not have.
"""

from __future__ import annotations

import re

import torch

from .allocator import get_allocator
from .storage import make_storage

_LOCATION = re.compile(r"zynq(?::(\d+))?$")


def _tag(obj: object) -> None:
    """No tag of its own: PyTorch's PrivateUse1 tagger already names zynq storages `zynq:0`."""


def _deserialize(obj: torch.UntypedStorage, location: str) -> torch.UntypedStorage | None:
    """A zynq storage holding the bytes of CPU storage `obj`, for a location `zynq` or `zynq:N`."""
    m = _LOCATION.match(location)
    if m is None:
        return None
    from .module import device_count

    index = int(m.group(1) or 0)
    if index >= device_count():
        raise RuntimeError(f"cannot load a tensor onto zynq:{index}: {device_count()} zynq device(s) present; "
                           "pass map_location='zynq' or 'cpu'")
    if obj.device.type != "cpu":
        obj = obj.cpu()
    host = torch.empty(0, dtype=torch.uint8).set_(obj, 0, (obj.nbytes(),), (1,))
    return make_storage(get_allocator().adopt(host), torch.device("zynq", 0))


def register_location() -> None:
    """Install the `zynq` deserializer (priority 19: before PyTorch's PrivateUse1 handler at 23)."""
    torch.serialization.register_package(19, _tag, _deserialize)
