"""Per-module quantization settings: a module (and its children) run under their own `QuantConfig`."""

from __future__ import annotations

from typing import Any

from torch import nn

from .engine.quant import QuantConfig, quant_config

_ATTR = "_pynqtorch_quant"


def set_module_quant_config(module: nn.Module, config: QuantConfig | None) -> nn.Module:
    """Run `module`'s forward under `config` (None removes a previous setting); returns the module.

    Inner modules with their own setting take precedence inside their forward. The setting is kept with
    hooks, so it survives `.to("zynq")` and works with any model code.
    """
    old = getattr(module, _ATTR, None)
    if old is not None:
        for handle in old[1]:
            handle.remove()
        delattr(module, _ATTR)
    if config is None:
        return module
    contexts: list[Any] = []

    def enter(_mod: nn.Module, _args: Any) -> None:
        ctx = quant_config(config)
        ctx.__enter__()
        contexts.append(ctx)

    def leave(_mod: nn.Module, _args: Any, _out: Any) -> None:
        contexts.pop().__exit__(None, None, None)

    handles = [module.register_forward_pre_hook(enter), module.register_forward_hook(leave, always_call=True)]
    setattr(module, _ATTR, (config, handles))
    return module


def module_quant_config(module: nn.Module) -> QuantConfig | None:
    """The config set on `module` itself, if any."""
    entry = getattr(module, _ATTR, None)
    return None if entry is None else entry[0]
