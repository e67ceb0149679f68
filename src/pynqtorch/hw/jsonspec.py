"""Loading JSON specs (kernel descriptions, overlays) with pydantic, errors naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def _c_identifier(v: str) -> str:
    if not v.isidentifier():
        raise ValueError(f"{v!r} is not a C identifier")
    return v


CIdentifier = Annotated[str, AfterValidator(_c_identifier)]


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")


def load_spec(path: Path, model: type[M], error: type[Exception]) -> M:
    """Read `path` as JSON and validate it as `model`; failures raise `error` naming file and field."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: field '{_field_path(err['loc']) or '<root>'}': {err['msg']}" for err in e.errors()]
        raise error("\n".join(lines)) from None
