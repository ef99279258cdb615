"""Spec JSON in SQL: reading fields of ``cells.spec_json`` in the database's own dialect, and
the attack filters (name, eps, any parameter) every table query shares.

SQLite reads JSON with ``json_extract``/``json_type``, PostgreSQL with ``jsonb`` operators;
paths (all in :mod:`storage.spec_paths`) are bound parameters, never spliced into the SQL
text. Numbers compare within a relative tolerance of 1e-6, ``true``/``false`` as booleans,
text case-insensitively.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    func,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from storage import spec_paths as paths
from storage.errors import StorageError
from storage.models import CellModel

_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class AttackFilter:
    """Which attack configurations a query selects.

    Attributes:
        attack: Registry name, or None for every attack.
        eps: Budget, compared with a relative tolerance of 1e-6; cells whose attack has no
            ``eps`` are left out when given.
        params: ``{param: value}`` text as typed on a command line; numbers compare as
            numbers, ``true``/``false`` as booleans, anything else as text (case-insensitive).
    """

    attack: str | None = None
    eps: float | None = None
    params: tuple[tuple[str, str], ...] = ()


class SpecJson:
    """JSON access to ``cells.spec_json`` in this database's dialect."""

    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"
        self.parsed: Any = None
        self.doc: Any = CellModel.spec_json
        if self.pg:
            # parse each row's spec once: a cast inside every path expression parses it
            # once per path (12 times a row); OFFSET 0 keeps the planner from inlining it back
            self.parsed = (
                select(cast(CellModel.spec_json, JSONB).label("doc"))
                .correlate(CellModel)
                .offset(0)
                .lateral("spec")
            )
            self.doc = self.parsed.c.doc

    def attach(self, query: Select[Any]) -> Select[Any]:
        """``query`` (whose FROM starts at ``cells``) with the parsed spec joined in."""
        return query.join(self.parsed, true()) if self.pg else query

    def _path(self, path: tuple[str, ...]) -> Any:
        if self.pg:
            return bindparam(None, list(path), type_=ARRAY(String))
        return bindparam(None, "$." + ".".join(path), type_=String)

    def text(self, *path: str) -> ColumnElement[Any]:
        """The value as text (strings unquoted, objects as JSON text)."""
        if self.pg:
            return self.doc.op("#>>")(self._path(path))
        return func.json_extract(self.doc, self._path(path))

    def number(self, *path: str) -> ColumnElement[Any]:
        """The value as a float (NULL where absent or not a number: a list of budgets)."""
        return case((self.kind(*path) == "number", cast(self.text(*path), Float)))

    def kind(self, *path: str) -> ColumnElement[Any]:
        """The JSON type: ``number``, ``string``, ``boolean``, ``null``, ``object``…"""
        if self.pg:
            return func.jsonb_typeof(self.doc.op("#>")(self._path(path)))
        raw = func.json_type(self.doc, self._path(path))
        return case(
            (raw.in_(("integer", "real")), "number"),
            (raw == "text", "string"),
            (raw.in_(("true", "false")), "boolean"),
            else_=raw,
        )

    def boolean_text(self, *path: str) -> ColumnElement[Any]:
        """``true``/``false`` for a boolean value."""
        if self.pg:
            return self.text(*path)
        return func.json_type(self.doc, self._path(path))


def _param_condition(js: SpecJson, key: str, value: str) -> ColumnElement[bool]:
    if not _PARAM_NAME.match(key):
        raise StorageError(f"attack parameter name {key!r} is not a name (letters, digits, _)")
    path = paths.attack_param(key)
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return and_(js.kind(*path) == "boolean", js.boolean_text(*path) == lowered)
    try:
        number = float(value)
    except ValueError:
        return and_(js.kind(*path) == "string", func.lower(js.text(*path)) == lowered)
    if not math.isfinite(number):
        raise StorageError(f"attack parameter {key}={value!r}: expected a finite number")
    return func.abs(js.number(*path) - number) <= _tol(number)


def _tol(value: float) -> float:
    return 1e-9 + 1e-6 * abs(value)


def attack_filters(js: SpecJson, f: AttackFilter) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if f.attack is not None:
        out.append(js.text(*paths.ATTACK_NAME) == f.attack)
    if f.eps is not None:
        out.append(func.abs(js.number(*paths.ATTACK_EPS) - f.eps) <= _tol(f.eps))
    out += [_param_condition(js, k, v) for k, v in f.params]
    return out


@functools.lru_cache(maxsize=4096)
def canonical_params(text: str | None) -> str:
    """Attack params JSON text (as either backend returns it) in canonical form."""
    return json.dumps(json.loads(text or "{}"), sort_keys=True, separators=(",", ":"))
