"""Problems found in a study file, collected with the line and path of each
(``line 7: attacks[2].eps[0]: must be ≥ 0``), and pydantic's errors said that way."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from orchestrator.study.yamlpos import Positions, format_path

_MESSAGES = {
    "greater_than_equal": "must be ≥ {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be ≤ {le}",
    "less_than": "must be < {lt}",
    "missing": "required key is missing",
}


def describe_error(err: Any, allowed: list[str]) -> str:
    """One pydantic error as a study file's problem text.

    Args:
        err: An item of ``ValidationError.errors()``.
        allowed: The keys the failing model accepts (named for an unknown key).
    """
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key {key!r}; {hint}allowed keys: {', '.join(sorted(allowed))}"
    if kind in _MESSAGES:
        ctx = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in ctx.items()}
        return _MESSAGES[kind].format(**ctx) + f" (got {err.get('input')!r})"
    return f"{err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})"


class Problems:
    """Problems of one study file, each once, with its line in the file and its path."""

    def __init__(self, source: str, text: str) -> None:
        self.source, self.positions = source, Positions(text)
        self.items: list[str] = []

    def add(self, loc: tuple, message: str) -> None:
        line = self.positions.line(loc)
        where = f"line {line}: " if line else ""
        item = f"{where}{format_path(loc)}: {message}"
        if item not in self.items:  # a bad value shared by several grid points: say it once
            self.items.append(item)

    def add_pydantic(self, exc: ValidationError, prefix: tuple, model: type[BaseModel]) -> None:
        for err in exc.errors():
            loc = prefix + tuple(err["loc"])
            owner = _model_at(model, tuple(err["loc"][:-1]))
            self.add(loc, describe_error(err, list(owner.model_fields) if owner else []))


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        info = getattr(current, "model_fields", {}).get(part)
        if info is None:
            return None
        ann = info.annotation
        args = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type)]
        candidates = [ann, *args]
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if current is None:
            return None
    return current if isinstance(current, type) else None
