"""The `torch_dynamo_backends` entry point of ``torch.compile(model, backend="pynqtorch")`` (`compiler.pynqtorch`).

Importing it, as dynamo does when it looks the backend up by name, puts the device's own packages on dynamo's
skip list before anything is traced (`compiler.skip_runtime`).
"""

from __future__ import annotations

from .compiler import pynqtorch, skip_runtime

skip_runtime()

__all__ = ["pynqtorch"]
