"""Write tracking: every aten overload that writes a tensor (`Tensor(a!)`, `Tensor(a!)?`, `Tensor(a!)[]`)
bumps the write generation of each zynq tensor it writes, so caches derived from them (quantized weights)
stay coherent. The sweeps walk PyTorch's schema registry, not a list of ops.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import pynqtorch
from pynqtorch.device.fallback import _plan
from pynqtorch.device.storage import write_generation


def _aten_overload(schema: torch._C.FunctionSchema) -> Any:
    base = schema.name.split("::")[1]
    return getattr(getattr(torch.ops.aten, base), schema.overload_name or "default")


def _mutating_schemas(list_only: bool = False) -> list[torch._C.FunctionSchema]:
    out = []
    for s in torch._C._jit_get_all_schemas():
        if not s.name.startswith("aten::"):
            continue
        args = [a for a in s.arguments if a.alias_info is not None and a.alias_info.is_write]
        if args and (not list_only or any(str(a.type) == "List[Tensor]" for a in args)):
            out.append(s)
    return out


def test_every_written_argument_of_the_registry_is_tracked() -> None:
    """For every aten overload with a written argument, the fallback's plan names exactly those arguments."""
    checked = 0
    for s in _mutating_schemas():
        try:
            op = _aten_overload(s)
        except (AttributeError, RuntimeError):
            continue
        expected = {a.name if a.kwarg_only else i for i, a in enumerate(s.arguments)
                    if a.alias_info is not None and a.alias_info.is_write
                    and str(a.type) in ("Tensor", "Optional[Tensor]", "List[Tensor]")}
        assert expected <= set(_plan(op).written), s
        checked += 1
    assert checked > 1000


def _value(arg: torch._C.Argument, n: int) -> Any:
    """A value for `arg` synthesised from its type: lists of `n` small positive float tensors, scalars."""
    t = str(arg.type)
    if t == "List[Tensor]":
        return [torch.rand(3) + 0.5 for _ in range(n)]
    if t == "Tensor":
        return torch.tensor(0.5)
    if t in ("number", "float"):
        return 0.5
    if t == "List[number]":
        return [0.5] * n
    if t == "int":
        return 1
    if t == "bool":
        return False
    raise TypeError(t)


def _zynq(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.to("zynq")
    if isinstance(v, list) and v and isinstance(v[0], torch.Tensor):
        return [x.to("zynq") for x in v]
    return v


def _clone(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.clone()
    if isinstance(v, list) and v and isinstance(v[0], torch.Tensor):
        return [x.clone() for x in v]
    return v


def _tensors(v: Any) -> list[torch.Tensor]:
    return [t for t in (v if isinstance(v, list) else [v]) if isinstance(t, torch.Tensor)]


def _synthesise(s: torch._C.FunctionSchema) -> tuple[list, dict] | None:
    args: list = []
    kwargs: dict = {}
    try:
        for a in s.arguments:
            if a.has_default_value():
                continue
            v = _value(a, 2)
            if a.kwarg_only:
                kwargs[a.name] = v
            else:
                args.append(v)
    except TypeError:
        return None
    return args, kwargs


def test_tensor_list_writers_bump_every_written_tensor() -> None:
    """Every aten overload writing through a tensor list (`_foreach_*_`, `_fused_*_`, `_amp_foreach_*`) that
    can be called with synthesised arguments marks each written zynq tensor and writes what CPU writes."""
    ran = []
    for s in _mutating_schemas(list_only=True):
        built = _synthesise(s)
        if built is None:
            continue
        op = _aten_overload(s)
        args, kwargs = built
        cpu_args = [_clone(a) for a in args]
        cpu_kwargs = {k: _clone(v) for k, v in kwargs.items()}
        try:
            op(*cpu_args, **cpu_kwargs)
        except Exception:  # noqa: BLE001, S112 - arguments CPU refuses (dtype, shape, index): not a case here
            continue
        zargs = [_zynq(a) for a in args]
        zkwargs = {k: _zynq(v) for k, v in kwargs.items()}
        # Every argument tensor whose data the call changes must have a new write generation.
        tensors = [t for v in zargs + list(zkwargs.values()) for t in _tensors(v)]
        before = [(write_generation(t), t.cpu().clone()) for t in tensors]
        op(*zargs, **zkwargs)
        changed = [(t, g) for t, (g, old) in zip(tensors, before) if not torch.equal(t.cpu(), old)]
        assert all(write_generation(t) > g for t, g in changed), s
        for c, z in zip(cpu_args + list(cpu_kwargs.values()), zargs + list(zkwargs.values())):
            for cc, zz in zip(c if isinstance(c, list) else [c], z if isinstance(z, list) else [z]):
                if isinstance(cc, torch.Tensor):
                    torch.testing.assert_close(zz.cpu(), cc, equal_nan=True, msg=str(s))
        if changed:
            ran.append(s.name)
    assert sum(n.startswith("aten::_foreach_") for n in ran) > 100, len(ran)
    assert any(n.startswith("aten::_amp_foreach_") for n in ran)


def _train(device: str, make_opt: Any, steps: int) -> tuple[float, nn.Module]:
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = (x @ torch.randn(8, 1)).tanh()
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1)).to(device)
    opt = make_opt(model.parameters())
    xd, yd = x.to(device), y.to(device)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(xd), yd)
        loss.backward()
        opt.step()
    return float(loss), model


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, fused=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, fused=True),
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, fused=True),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_optimizer_training_learns_like_cpu(name: str) -> None:
    """A fused-optimizer training run on zynq (GEMMs on the kernel, int8) ends at CPU's loss."""
    pynqtorch.reset_report()
    cpu_loss, _ = _train("cpu", OPTIMIZERS[name], 40)
    zynq_loss, _ = _train("zynq", OPTIMIZERS[name], 40)
    assert pynqtorch.report().accelerated["aten::addmm"].calls >= 80
    start, _ = _train("cpu", OPTIMIZERS[name], 1)
    assert cpu_loss < start / 10
    assert abs(zynq_loss - cpu_loss) < 0.2 * cpu_loss + 1e-3, (zynq_loss, cpu_loss)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_forward_after_one_fused_step_matches_cpu(name: str) -> None:
    """One fused step changes the weights; the next forward uses the new weights (not a stale quantization)."""
    x = torch.randn(16, 8)
    _, cpu_model = _train("cpu", OPTIMIZERS[name], 1)
    _, zynq_model = _train("zynq", OPTIMIZERS[name], 1)
    with torch.no_grad():
        fresh = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
        fresh.load_state_dict({k: v.cpu() for k, v in zynq_model.state_dict().items()})
        got = zynq_model(x.to("zynq")).cpu()
        torch.testing.assert_close(got, fresh(x), atol=0.05, rtol=0.05)
        torch.testing.assert_close(got, cpu_model(x), atol=0.05, rtol=0.05)
