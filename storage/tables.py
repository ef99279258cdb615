"""Queries behind the tables: transfer counts and per-attack metrics, filtered and joined in SQL.

Cell specs are JSON text in ``cells.spec_json``; the filters (attack name, eps, any attack
parameter) and the pivot of metric rows into columns run in the database, so a table over an
index of millions of metric rows returns one row per selected cell. SQLite reads JSON with
``json_extract``/``json_type``, PostgreSQL with ``jsonb`` operators; paths (all in
:mod:`storage.spec_paths`) are bound parameters, never spliced into the SQL text.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import defaultdict
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
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import aliased

from storage import spec_paths as paths
from storage.core import DatabaseCore
from storage.enums import CellKind, CellState
from storage.errors import StorageError
from storage.models import CellArtifactModel, CellModel, MetricModel

DENOMINATORS = ("source_success", "all", "target_correct")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# the metrics of an attack cell a robustness curve reads (``robust_accuracy_eps_<b>`` too)
CURVE_METRICS = ("clean_accuracy", "robust_accuracy", "queries_mean", "n")
BUDGET_PREFIX = "robust_accuracy_eps_"


@dataclass(frozen=True)
class TransferCount:
    """One done transfer cell: how many of its counted examples fooled the target.

    Attributes:
        params_json: The attack's normalized params as canonical JSON (sorted keys), so
            equal configurations compare equal on every backend.
        source_defense, target_defense: ``(name, label)`` of the defense on either side.
        fooled: Examples the target misclassified among the ``n`` the denominator counts.
    """

    cell_key: str
    dataset: str
    attack: str
    params_json: str
    source: str
    source_defense: tuple[str, str]
    target: str
    target_defense: tuple[str, str]
    fooled: int
    n: int


@dataclass(frozen=True)
class TransferOutputs:
    """Where one done transfer cell's per-sample outcomes are.

    Attributes:
        adversarial: Digest of the adversarial set it evaluated (the attack cell's artifact).
        predictions: Digest of its ``predictions`` artifact (``indices``, ``pred_clean``,
            ``pred_adv``, ``fooled``); None for a cell recorded before advgrid kept them.
    """

    cell_key: str
    dataset: str
    attack: str
    params_json: str
    source: str
    source_defense: tuple[str, str]
    target: str
    target_defense: tuple[str, str]
    attack_key: str
    adversarial: str
    predictions: str | None


@dataclass(frozen=True)
class AttackMetrics:
    """One done attack cell with the metrics a robustness curve reads."""

    cell_key: str
    dataset: str
    source: str
    defense: tuple[str, str]
    attack: str
    params_json: str
    metrics: dict[str, float]


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


class _Json:
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


def _param_condition(js: _Json, key: str, value: str) -> ColumnElement[bool]:
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


def _filters(js: _Json, f: AttackFilter) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if f.attack is not None:
        out.append(js.text(*paths.ATTACK_NAME) == f.attack)
    if f.eps is not None:
        out.append(func.abs(js.number(*paths.ATTACK_EPS) - f.eps) <= _tol(f.eps))
    out += [_param_condition(js, k, v) for k, v in f.params]
    return out


def _heads(js: _Json) -> tuple[ColumnElement[Any], ...]:
    """Dataset label, attack name, attack params, source, source defense name and label."""
    return (
        js.text(*paths.DATASET_LABEL),
        js.text(*paths.ATTACK_NAME),
        js.text(*paths.ATTACK_PARAMS),
        js.text(*paths.SOURCE.model),
        js.text(*paths.SOURCE.defense_name),
        js.text(*paths.SOURCE.defense_label),
    )


def _transfer_heads(r: Any) -> dict[str, Any]:
    """The fields every transfer row starts with: the cell key, :func:`_heads` and the
    target with its defense, in the order the queries select them."""
    return {
        "cell_key": r[0],
        "dataset": r[1],
        "attack": r[2],
        "params_json": canonical_params(r[3]),
        "source": r[4],
        "source_defense": (r[5], r[6] or r[5]),
        "target": r[7],
        "target_defense": (r[8], r[9] or r[8]),
    }


@functools.lru_cache(maxsize=4096)
def canonical_params(text: str | None) -> str:
    """Attack params JSON text (as either backend returns it) in canonical form."""
    return json.dumps(json.loads(text or "{}"), sort_keys=True, separators=(",", ":"))


class TablesMixin(DatabaseCore):
    """Table queries of :class:`storage.Database`."""

    def transfer_counts(
        self,
        study_id: int,
        *,
        denominator: str = "source_success",
        where: AttackFilter | None = None,
    ) -> list[TransferCount]:
        """Fooled and counted examples of every done transfer cell the filter selects.

        Args:
            study_id: The study.
            denominator: ``source_success``, ``all`` or ``target_correct``: which examples
                a cell counts (see :mod:`tasks.metrics`).
            where: Which attack configurations; None for all.

        Returns:
            One row per done transfer cell, ordered by cell id.
        """
        if denominator not in DENOMINATORS:
            raise StorageError(
                f"unknown denominator {denominator!r}; use one of {', '.join(DENOMINATORS)}"
            )
        js = _Json(self.dialect)
        fooled, count = aliased(MetricModel), aliased(MetricModel)
        q = (
            select(
                CellModel.key,
                *_heads(js),
                js.text(*paths.TARGET.model),
                js.text(*paths.TARGET.defense_name),
                js.text(*paths.TARGET.defense_label),
                fooled.value,
                count.value,
            )
            .select_from(CellModel)
            .join(
                fooled, and_(fooled.cell_id == CellModel.id, fooled.name == f"fooled_{denominator}")
            )
            .join(count, and_(count.cell_id == CellModel.id, count.name == f"n_{denominator}"))
        )
        q = (
            js.attach(q)
            .where(
                CellModel.study_id == study_id,
                CellModel.state == CellState.DONE,
                CellModel.kind == CellKind.TRANSFER,
                *_filters(js, where or AttackFilter()),
            )
            .order_by(CellModel.id)
        )
        with self.session_scope(write=False) as s:
            return [
                TransferCount(
                    **_transfer_heads(r),
                    fooled=int(r[10]),
                    n=int(r[11]),
                )
                for r in s.execute(q)
            ]

    def transfer_outputs(
        self, study_id: int, *, where: AttackFilter | None = None
    ) -> list[TransferOutputs]:
        """The artifacts behind every done transfer cell the filter selects, by cell id.

        The adversarial set is found through the cell's dependencies (the attack cell among
        them), expanded in SQL like the claim query does.
        """
        js = _Json(self.dialect)
        if self.pg:
            deps = func.jsonb_array_elements_text(cast(CellModel.depends_on, JSONB))
        else:
            deps = func.json_each(CellModel.depends_on)
        dep = deps.table_valued("value").alias("dep")
        attack = aliased(CellModel, name="attack_cell")
        adv = aliased(CellArtifactModel, name="adv")
        pred = aliased(CellArtifactModel, name="pred")
        q = select(
            CellModel.key,
            *_heads(js),
            js.text(*paths.TARGET.model),
            js.text(*paths.TARGET.defense_name),
            js.text(*paths.TARGET.defense_label),
            attack.key,
            adv.digest,
            pred.digest,
        ).select_from(CellModel)
        q = (
            js.attach(q)
            .join(dep, true())
            .join(attack, and_(attack.study_id == study_id, attack.key == dep.c.value))
            .join(adv, and_(adv.cell_id == attack.id, adv.role == "adversarial"))
            .outerjoin(pred, and_(pred.cell_id == CellModel.id, pred.role == "predictions"))
            .where(
                CellModel.study_id == study_id,
                CellModel.state == CellState.DONE,
                CellModel.kind == CellKind.TRANSFER,
                attack.kind == CellKind.ATTACK,
                *_filters(js, where or AttackFilter()),
            )
            .order_by(CellModel.id)
        )
        with self.session_scope(write=False) as s:
            return [
                TransferOutputs(
                    **_transfer_heads(r),
                    attack_key=r[10],
                    adversarial=r[11],
                    predictions=r[12],
                )
                for r in s.execute(q)
            ]

    @property
    def pg(self) -> bool:
        return self.dialect == "postgresql"

    def attack_metrics(
        self, study_id: int, *, where: AttackFilter | None = None
    ) -> list[AttackMetrics]:
        """Every done attack cell the filter selects with its curve metrics.

        The metrics are those in :data:`CURVE_METRICS` plus the per-budget robust accuracies
        (``robust_accuracy_eps_<b>``) of minimum-norm attacks.
        """
        js = _Json(self.dialect)
        q = (
            select(
                CellModel.key,
                js.text(*paths.DATASET_LABEL),
                js.text(*paths.SOURCE.model),
                js.text(*paths.SOURCE.defense_name),
                js.text(*paths.SOURCE.defense_label),
                js.text(*paths.ATTACK_NAME),
                js.text(*paths.ATTACK_PARAMS),
                MetricModel.name,
                MetricModel.value,
            )
            .select_from(CellModel)
            .join(MetricModel, MetricModel.cell_id == CellModel.id)
        )
        q = (
            js.attach(q)
            .where(
                CellModel.study_id == study_id,
                CellModel.state == CellState.DONE,
                CellModel.kind == CellKind.ATTACK,
                or_(
                    MetricModel.name.in_(CURVE_METRICS), MetricModel.name.like(BUDGET_PREFIX + "%")
                ),
                *_filters(js, where or AttackFilter()),
            )
            .order_by(CellModel.id)
        )
        heads: dict[str, tuple] = {}
        metrics: dict[str, dict[str, float]] = defaultdict(dict)
        with self.session_scope(write=False) as s:
            for r in s.execute(q):
                heads.setdefault(r[0], tuple(r[1:7]))
                metrics[r[0]][r[7]] = float(r[8])
        return [
            AttackMetrics(
                cell_key=key,
                dataset=h[0],
                source=h[1],
                defense=(h[2], h[3] or h[2]),
                attack=h[4],
                params_json=canonical_params(h[5]),
                metrics=metrics[key],
            )
            for key, h in heads.items()
        ]
