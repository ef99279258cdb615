"""Queries behind the tables: transfer counts and per-attack metrics, filtered and joined in SQL.

Cell specs are JSON text in ``cells.spec_json``; the filters (attack name, eps, any attack
parameter) and the pivot of metric rows into columns run in the database, so a table over an
index of millions of metric rows returns one row per selected cell. SQLite reads JSON with
``json_extract``/``json_type``, PostgreSQL with ``jsonb`` operators; paths (all in
:mod:`storage.spec_paths`) are bound parameters, never spliced into the SQL text.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    cast,
    func,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import aliased

from storage import spec_paths as paths
from storage.core import DatabaseCore
from storage.enums import CellKind, CellState
from storage.errors import StorageError
from storage.models import CellArtifactModel, CellModel, MetricModel
from storage.spec_json import AttackFilter, SpecJson, attack_filters, canonical_params

DENOMINATORS = ("source_success", "all", "target_correct")

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
class AttackOutputs:
    """Where one done attack cell's adversarial set is, with what it attacked.

    Attributes:
        dataset_spec: The cell spec's dataset component (what reloads its images).
        adaptive: The defense entry's ``adaptive`` (None where the attack did not adapt).
        adversarial: Digest of the cell's ``adversarial`` artifact.
    """

    cell_key: str
    dataset: str
    dataset_spec: dict[str, Any]
    source: str
    defense: tuple[str, str]
    adaptive: str | None
    attack: str
    params_json: str
    adversarial: str


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


def _heads(js: SpecJson) -> tuple[ColumnElement[Any], ...]:
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


class TableQueriesMixin(DatabaseCore):
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
        js = SpecJson(self.dialect)
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
                *attack_filters(js, where or AttackFilter()),
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
        js = SpecJson(self.dialect)
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
                *attack_filters(js, where or AttackFilter()),
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

    def attack_outputs(
        self, study_id: int, *, where: AttackFilter | None = None
    ) -> list[AttackOutputs]:
        """Every done attack cell the filter selects with its adversarial set, by cell id."""
        js = SpecJson(self.dialect)
        adv = aliased(CellArtifactModel, name="adv")
        q = select(
            CellModel.key,
            js.text(*paths.DATASET_LABEL),
            js.text(*paths.SOURCE.model),
            js.text(*paths.SOURCE.defense_name),
            js.text(*paths.SOURCE.defense_label),
            js.text(*paths.DEFENSE_ADAPTIVE),
            js.text(*paths.ATTACK_NAME),
            js.text(*paths.ATTACK_PARAMS),
            adv.digest,
            CellModel.spec_json,
        ).select_from(CellModel)
        q = (
            js.attach(q)
            .join(adv, and_(adv.cell_id == CellModel.id, adv.role == "adversarial"))
            .where(
                CellModel.study_id == study_id,
                CellModel.state == CellState.DONE,
                CellModel.kind == CellKind.ATTACK,
                *attack_filters(js, where or AttackFilter()),
            )
            .order_by(CellModel.id)
        )
        with self.session_scope(write=False) as s:
            return [
                AttackOutputs(
                    cell_key=r[0],
                    dataset=r[1],
                    dataset_spec=json.loads(r[9])["dataset"],
                    source=r[2],
                    defense=(r[3], r[4] or r[3]),
                    adaptive=r[5],
                    attack=r[6],
                    params_json=canonical_params(r[7]),
                    adversarial=r[8],
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
        js = SpecJson(self.dialect)
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
                *attack_filters(js, where or AttackFilter()),
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
