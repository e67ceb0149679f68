"""PyTorch's OpInfo database as the peer suite: every sample of every op, on zynq and on CPU, compared.

Each sample runs through the op's function, in-place and `out=` variants on exact twins of its tensors
(same storage size, strides and offset) on each device, with the same seed. A *semantic failure* is any
difference in: raising or not (and the exception class), result structure, device, dtype, shape, strides,
which input a result aliases, in-place/`out=` identity, the inputs afterwards, or values where the kernel
did not run (exactly for integers and booleans, `torch.testing.assert_close` for floats). Where a GEMM-family
kernel ran (the report counts accelerated calls), values are judged norm-wise: relative Frobenius error up
to `INT8_TOL` passes, more is an *int8 numeric deviation* (counted and listed, not a semantic failure).

Run as a script for the counts: ``PYTHONPATH=src python tests/opinfo_peer.py [--full]``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.testing._internal.common_methods_invocations import op_db
from torch.testing._internal.opinfo.core import OpInfo, SampleInput
from torch.utils._pytree import tree_flatten, tree_map

import pynqtorch

# Per-row int8 activations × per-channel int8 weights: a well-conditioned product is within ~1 % norm-wise.
INT8_TOL = 0.05
# Ops whose values are unspecified (uninitialised memory): only their metadata is compared.
_UNINITIALISED = ("empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided", "empty_permuted")
# Ops whose tensor arguments (other than the input) must be CPU tensors on every device.
_CPU_ARGS = ("tensor_split",)
# zynq tensors are dense: a result in another layout is refused with this message (by design, counted apart).
DENSE_ONLY = "zynq tensors are dense (strided) only"
DTYPES = (torch.float32,)
FULL_DTYPES = (torch.float32, torch.int64, torch.bool)


@dataclass
class Outcome:
    """What one op's samples gave."""

    passed: int = 0
    dense_only: int = 0  # samples with sparse/other layouts: zynq tensors are dense by design
    deviations: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class SemanticFailure(AssertionError):
    pass


def _twin(t: torch.Tensor, device: str) -> torch.Tensor:
    """A copy of `t` on `device` with the same storage size, strides and offset (and requires_grad)."""
    if t.layout is not torch.strided or t.is_conj() or t.is_neg():
        return t.to(device, copy=True)
    n = t.untyped_storage().nbytes() // t.element_size()
    flat = torch.empty(0, dtype=t.dtype).set_(t.untyped_storage(), 0, (n,), (1,)).detach()
    out = flat.to(device, copy=True).as_strided(t.size(), t.stride(), t.storage_offset())
    return out.requires_grad_(t.requires_grad) if t.requires_grad else out


def _on(sample: SampleInput, device: str, op_name: str) -> SampleInput:
    """Twins of the sample's tensors on `device` (its device arguments too, as OpInfo would make them for
    `device`); arguments PyTorch
    requires on CPU for every device (`tensor_split`'s indices) stay there."""
    if op_name in _CPU_ARGS:
        out = SampleInput(_twin(sample.input, device), args=sample.args, kwargs=dict(sample.kwargs))
    else:
        out = sample.transform(lambda t: _twin(t, device) if isinstance(t, torch.Tensor) else t)
    if "device" in out.kwargs:
        out.kwargs["device"] = device
    out.args = tuple(device if isinstance(a, (str, torch.device)) and str(a) == "cpu" else a for a in out.args)
    return out


def _tensors(x: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(x)[0] if isinstance(t, torch.Tensor)]


def _storage_key(t: torch.Tensor) -> int | None:
    if t.layout is not torch.strided:
        return None
    return t.untyped_storage().data_ptr()


def _alias_map(outputs: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[int | None]:
    """For each output, the index of the input whose storage it shares (None: fresh memory)."""
    keys = [_storage_key(t) for t in inputs]
    out = []
    for o in outputs:
        k = _storage_key(o)
        out.append(next((i for i, ik in enumerate(keys) if k is not None and ik == k and o.numel() > 0), None))
    return out


def _call(fn: Callable[..., Any], sample: SampleInput, extra: dict[str, Any]) -> tuple[Any, BaseException | None]:
    torch.manual_seed(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(sample.input, *sample.args, **sample.kwargs, **extra), None
    except Exception as e:  # noqa: BLE001 - compared with the other device's outcome
        return None, e


def _strides(t: torch.Tensor) -> tuple[int, ...]:
    """Strides that matter: those of dims longer than 1."""
    return tuple(s for s, n in zip(t.stride(), t.shape) if n > 1)


def _compare_values(z: torch.Tensor, c: torch.Tensor, accelerated: bool, what: str) -> float | None:
    """None when equal (exactly / allclose / within INT8_TOL); the relative error of a GEMM deviation."""
    zc = z.detach().cpu()
    c = c.detach()
    if accelerated and c.is_floating_point() and c.numel():
        num = (zc.double() - c.double()).nan_to_num(0.0, 0.0, 0.0).norm()
        den = c.double().nan_to_num(0.0, 0.0, 0.0).norm()
        if not torch.equal(zc.isnan(), c.isnan()) or not torch.equal(zc.isinf(), c.isinf()):
            raise SemanticFailure(f"{what}: NaN/Inf positions differ")
        rel = float(num / den) if den > 0 else float(num)
        return None if rel <= INT8_TOL else rel
    if c.is_floating_point() or c.is_complex():
        try:
            torch.testing.assert_close(zc, c, equal_nan=True, check_device=False, check_stride=False)
        except AssertionError as e:
            raise SemanticFailure(f"{what}: values differ: {str(e).splitlines()[0]}") from None
    elif not torch.equal(zc, c):
        raise SemanticFailure(f"{what}: values differ")
    return None


def _compare(z_res: Any, c_res: Any, z_in: list[torch.Tensor], c_in: list[torch.Tensor], accelerated: bool,
             check_values: bool, what: str, device: str | None) -> float | None:
    """Raise SemanticFailure on any semantic difference (results expected on `device`, if given); return the
    worst GEMM deviation (or None)."""
    z_flat, z_spec = tree_flatten(z_res)
    c_flat, c_spec = tree_flatten(c_res)
    if z_spec != c_spec and len(z_flat) != len(c_flat):
        raise SemanticFailure(f"{what}: result structure {z_spec} != {c_spec}")
    worst = None
    for i, (z, c) in enumerate(zip(z_flat, c_flat)):
        where = f"{what} result {i}"
        if isinstance(c, torch.Tensor):
            if not isinstance(z, torch.Tensor):
                raise SemanticFailure(f"{where}: {type(z).__name__} instead of a tensor")
            if device is not None and z.device.type != device:
                raise SemanticFailure(f"{where}: on {z.device}, expected {device}")
            meta_z = (z.dtype, tuple(z.shape), z.layout)
            meta_c = (c.dtype, tuple(c.shape), c.layout)
            if meta_z != meta_c:
                raise SemanticFailure(f"{where}: (dtype, shape, layout) {meta_z} != {meta_c}")
            if c.layout is torch.strided and _strides(z) != _strides(c):
                raise SemanticFailure(f"{where}: strides {z.stride()} != CPU's {c.stride()}")
            if check_values:
                dev = _compare_values(z, c, accelerated, where)
                if dev is not None:
                    worst = max(worst or 0.0, dev)
        elif isinstance(c, float) and math.isnan(c):
            if not (isinstance(z, float) and math.isnan(z)):
                raise SemanticFailure(f"{where}: {z!r} != {c!r}")
        elif check_values and z != c:
            raise SemanticFailure(f"{where}: {z!r} != {c!r}")
    zt = [t for t in z_flat if isinstance(t, torch.Tensor)]
    ct = [t for t in c_flat if isinstance(t, torch.Tensor)]
    if _alias_map(zt, z_in) != _alias_map(ct, c_in):
        raise SemanticFailure(f"{what}: aliasing {_alias_map(zt, z_in)} != CPU's {_alias_map(ct, c_in)}")
    return worst


def _accelerated_calls() -> int:
    return sum(s.calls for s in pynqtorch.report().accelerated.values())


def _variants(op: OpInfo) -> Iterator[tuple[str, Callable[..., Any]]]:
    yield "function", op.op
    if op.inplace_variant is not None:
        yield "inplace", op.inplace_variant


def run_sample(op: OpInfo, sample: SampleInput) -> float | None:
    """Compare one sample on zynq with CPU in every variant; raise SemanticFailure, or return a deviation."""
    check_values = op.name not in _UNINITIALISED and not op.name.startswith(("empty", "new_empty"))
    worst = None
    c_fn_res = None
    for variant, fn in _variants(op):
        cs, zs = _on(sample, "cpu", op.name), _on(sample, "zynq", op.name)
        c_in, z_in = _tensors((cs.input, cs.args, cs.kwargs)), _tensors((zs.input, zs.args, zs.kwargs))
        c_res, c_err = _call(fn, cs, {})
        before = _accelerated_calls()
        z_res, z_err = _call(fn, zs, {})
        accelerated = _accelerated_calls() > before
        what = f"{variant}"
        if c_err is not None or z_err is not None:
            if c_err is None or z_err is None or not isinstance(z_err, type(c_err)):
                raise SemanticFailure(f"{what}: CPU {c_err!r:.200} / zynq {z_err!r:.200}")
            continue
        if variant == "function":
            c_fn_res = c_res
        if variant == "inplace" and (c_res is cs.input) != (z_res is zs.input):
            raise SemanticFailure(f"{what}: returns self on CPU: {c_res is cs.input}, on zynq: {z_res is zs.input}")
        dev = _compare(z_res, c_res, z_in, c_in, accelerated, check_values, what, "zynq" if z_in or "device"
                       in zs.kwargs else "cpu")
        dev_in = _compare(z_in, c_in, z_in, c_in, accelerated, check_values, f"{what} inputs afterwards", None)
        worst = max((d for d in (worst, dev, dev_in) if d is not None), default=None)
    if op.supports_out and isinstance(c_fn_res, (torch.Tensor, tuple)) and all(
            isinstance(t, torch.Tensor) for t in tree_flatten(c_fn_res)[0]):
        cs, zs = _on(sample, "cpu", op.name), _on(sample, "zynq", op.name)

        def outs(device: str) -> Any:
            return tree_map(lambda t: torch.empty(0, dtype=t.dtype, device=device), c_fn_res)

        c_out, z_out = outs("cpu"), outs("zynq")
        c_res, c_err = _call(op.op, cs, {"out": c_out})
        before = _accelerated_calls()
        z_res, z_err = _call(op.op, zs, {"out": z_out})
        accelerated = _accelerated_calls() > before
        if c_err is not None or z_err is not None:
            if c_err is None or z_err is None or not isinstance(z_err, type(c_err)):
                raise SemanticFailure(f"out=: CPU {c_err!r:.200} / zynq {z_err!r:.200}")
        else:
            same = [a is b for a, b in zip(tree_flatten(c_res)[0], tree_flatten(c_out)[0])]
            if same != [a is b for a, b in zip(tree_flatten(z_res)[0], tree_flatten(z_out)[0])]:
                raise SemanticFailure("out=: the result is not the out= tensor as on CPU")
            c_in = _tensors((cs.input, cs.args, cs.kwargs, c_out))
            z_in = _tensors((zs.input, zs.args, zs.kwargs, z_out))
            dev = _compare(z_res, c_res, z_in, c_in, accelerated, check_values, "out=", "zynq")
            worst = max((d for d in (worst, dev) if d is not None), default=None)
    return worst


def samples(op: OpInfo, dtype: torch.dtype, limit: int | None = None) -> Iterator[SampleInput]:
    try:
        it = op.sample_inputs("cpu", dtype, requires_grad=False)
        for i, s in enumerate(it):
            if limit is not None and i >= limit:
                return
            yield s
    except Exception:  # noqa: BLE001 - some sample generators need CUDA or optional packages
        return


def run_op(op: OpInfo, dtypes: tuple[torch.dtype, ...] = DTYPES, limit: int | None = None) -> Outcome:
    out = Outcome()
    for dtype in dtypes:
        if dtype not in op.supported_dtypes("cpu"):
            continue
        for i, sample in enumerate(samples(op, dtype, limit)):
            tag = f"{op.name}[{str(dtype).removeprefix('torch.')} #{i}]"
            if any(t.layout is not torch.strided for t in _tensors((sample.input, sample.args, sample.kwargs))):
                out.dense_only += 1
                continue
            try:
                dev = run_sample(op, sample)
            except SemanticFailure as e:
                if DENSE_ONLY in str(e):
                    out.dense_only += 1
                else:
                    out.failures.append(f"{tag}: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - the harness must not stop on one sample
                out.failures.append(f"{tag}: harness error {e!r:.200}")
                continue
            if dev is None:
                out.passed += 1
            else:
                out.deviations.append(f"{tag}: relative error {dev:.3f}")
    return out


# OpInfo names whose samples reach the GEMM-family kernels: always in the default selection.
GEMM_OPS = frozenset({
    "mm", "addmm", "bmm", "baddbmm", "addbmm", "addr", "mv", "addmv", "dot", "vdot", "inner",
    "matmul", "__rmatmul__", "linalg.multi_dot", "tensordot", "einsum", "nn.functional.linear",
    "nn.functional.bilinear", "cdist", "nn.functional.scaled_dot_product_attention", "linalg.matrix_power",
    "matrix_exp", "cov", "corrcoef", "kron", "outer",
})


def selection() -> list[OpInfo]:
    """The default run's bounded selection: every GEMM-family op and every third other op."""
    return [op for i, op in enumerate(op_db) if op.name in GEMM_OPS or i % 3 == 0]


def ops(names: tuple[str, ...] | None = None) -> list[OpInfo]:
    return [op for op in op_db if names is None or op.name in names]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="float32, int64 and bool, every sample (else float32)")
    p.add_argument("--op", action="append", help="only these OpInfo names")
    p.add_argument("--limit", type=int, default=None, help="samples per op and dtype")
    a = p.parse_args(argv)
    totals = collections.Counter()
    for op in ops(tuple(a.op) if a.op else None):
        with contextlib.redirect_stderr(sys.stdout):
            res = run_op(op, FULL_DTYPES if a.full else DTYPES, a.limit)
        totals.update(passed=res.passed, failures=len(res.failures), deviations=len(res.deviations),
                      dense_only=res.dense_only)
        for line in res.failures:
            print("SEMANTIC", line)
        for line in res.deviations:
            print("INT8", line)
    print(f"passed {totals['passed']}  semantic failures {totals['failures']}  "
          f"int8 numeric deviations {totals['deviations']}  other layouts (dense-only device) "
          f"{totals['dense_only']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
