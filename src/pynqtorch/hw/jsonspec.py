"""Loading JSON specs (kernel descriptions, overlays) with pydantic, errors naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def _c_identifier(v: str) -> str:
    if not v.isidentifier():
        raise ValueError(f"{v!r} is not a C identifier")
    return v


CIdentifier = Annotated[str, AfterValidator(_c_identifier)]


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")


def _read(path: Path, error: type[Exception]) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot be read: {e}") from None


def _validate(path: Path, raw: Any, model: type[M], error: type[Exception]) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: field '{_field_path(err['loc']) or '<root>'}': {err['msg']}" for err in e.errors()]
        raise error("\n".join(lines)) from None


def load_spec(path: Path, model: type[M], error: type[Exception]) -> M:
    """Read `path` as JSON and validate it as `model`; failures raise `error` naming file and field."""
    return _validate(path, _read(path, error), model, error)


def load_tagged_spec(path: Path, tag: str, models: dict[str, type[BaseModel]], error: type[Exception]) -> BaseModel:
    """Like `load_spec`, with the model chosen by the value of field `tag` (a discriminated union)."""
    raw = _read(path, error)
    value = raw.get(tag) if isinstance(raw, dict) else None
    if value not in models:
        raise error(f"{path}: field '{tag}': {value!r} is not one of {sorted(models)}")
    return _validate(path, raw, models[value], error)
