"""The query behind ``advgrid defenses``: adaptive, oblivious and non-adaptive robust
accuracy side by side.

For a model M behind a defense D and one attack configuration A there are three numbers
(Athalye, Carlini & Wagner, ICML 2018; Carlini et al., "On Evaluating Adversarial
Robustness", 2019):

- **adaptive**: the attack cell on source M+D, whose attack ran on M+D (through BPDA/EOT
  where the study asks for it): ``robust_accuracy``;
- **oblivious** (non-adaptive): A crafted on M alone, evaluated on M+D: the transfer cell
  with source M (defense ``none``) and target M+D: ``target_robust_accuracy``;
- **non-adaptive white-box**, for an attack cell that adapted: its twin, the same attack on
  M+D without BPDA/EOT (following autograd's masked gradient): ``robust_accuracy``.

A study has the second when it lists ``none`` among its defenses and M among its targets.
The transfer cell is matched to the attack cell by dataset (label and evaluation slice),
model, the defense's name, label and params, and the attack's name and params. Both sides
are read in SQL (specs are JSON text, read and filtered as in :mod:`storage.spec_json`, the
metric rows joined through their primary key) and matched by a hash lookup, see
:meth:`DefenseQueriesMixin.defense_evaluations`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, select
from sqlalchemy.orm import aliased

from storage.core import DatabaseCore
from storage.enums import CellKind, CellState
from storage.models import CellModel, MetricModel
from storage.spec_json import AttackFilter, SpecJson, attack_filters, canonical_params
from storage.spec_paths import (
    ATTACK_NAME,
    ATTACK_PARAMS,
    DATASET_LABEL,
    DEFENSE_ADAPTIVE,
    EVAL_HASH,
    SOURCE,
    TARGET,
    ModelSide,
)

# what an attack cell contributes: its numbers and its gradient-masking diagnostics
DEFENSE_METRICS = (
    "n",
    "clean_accuracy",
    "robust_accuracy",
    "adaptive_bpda",
    "adaptive_eot",
    "eot_samples",
    "grad_zero_fraction",
    "grad_l1_median",
    "forward_random_fraction",
    "defense_randomized",
    "robust_accuracy_worst_of_10",
    "generator_recon_accuracy",
    "generator_keep_0_accuracy",
)


@dataclass(frozen=True)
class DefenseEvaluation:
    """One done attack cell on M (+ defense), with the oblivious number for the same M+D.

    Attributes:
        model: The source model M.
        defense: ``(name, label)``; ``("none", …)`` for the undefended model.
        adaptive: How the attack adapted to the defense: ``none``, ``bpda``, ``eot`` or
            ``bpda+eot``.
        params_json: The attack's normalized params as canonical JSON.
        metrics: The attack cell's metrics among :data:`DEFENSE_METRICS` that it has.
        oblivious_key: The key of the transfer cell M (none) → M+D; None when the study
            has none done.
        oblivious_robust: Its ``target_robust_accuracy``.
        oblivious_clean: Its ``target_clean_accuracy`` (M+D on the clean inputs).
        naive_key: For an adapted attack cell, the key of its non-adaptive twin (the same
            attack on M+D without BPDA/EOT, :mod:`orchestrator.study.plan`); None otherwise or
            when the twin is not done.
        naive_robust: The twin's ``robust_accuracy``.
    """

    cell_key: str
    dataset: str
    model: str
    defense: tuple[str, str]
    adaptive: str
    attack: str
    params_json: str
    metrics: dict[str, float]
    oblivious_key: str | None
    oblivious_robust: float | None
    oblivious_clean: float | None
    naive_key: str | None = None
    naive_robust: float | None = None


class DefenseQueriesMixin(DatabaseCore):
    """The adaptive-evaluation query of :class:`storage.Database`."""

    def defense_evaluations(
        self, study_id: int, *, where: AttackFilter | None = None
    ) -> list[DefenseEvaluation]:
        """Every done attack cell the filter selects, undefended ones included, with the
        oblivious robust accuracy of its defended model; ordered by cell id.

        Two reads in one transaction, each filtered in SQL and linear in what it returns,
        matched here on the heads by a hash lookup. (A join in SQL on the JSON heads is
        planned by SQLite, which has no statistics on them, as a scan of one side per row
        of the other: quadratic in the study's attack cells.)

        Args:
            study_id: The study.
            where: Which attack configurations; None for all.
        """
        with self.session_scope(write=False) as s:
            attacked = s.execute(self._attacked(study_id, where or AttackFilter())).all()
            oblivious: dict[tuple, tuple] = {}
            for r in s.execute(self._oblivious(study_id)):
                oblivious.setdefault(tuple(r[1 : 1 + len(_MATCH)]), (r[0], *r[-2:]))
        return _rows(attacked, oblivious)

    def _attacked(self, study_id: int, where: AttackFilter) -> Select[Any]:
        """Done attack cells the filter selects: key, matched heads, ``adaptive``, and one
        row per metric among :data:`DEFENSE_METRICS`."""
        js = SpecJson(self.dialect)
        q = select(
            CellModel.key,
            *_heads(js, SOURCE),
            js.text(*DEFENSE_ADAPTIVE),
            MetricModel.name,
            MetricModel.value,
        ).select_from(CellModel)
        return (
            js.attach(q.join(MetricModel, MetricModel.cell_id == CellModel.id))
            .where(
                CellModel.study_id == study_id,
                CellModel.state == CellState.DONE,
                CellModel.kind == CellKind.ATTACK,
                MetricModel.name.in_(DEFENSE_METRICS),
                *attack_filters(js, where),
            )
            .order_by(CellModel.id)
        )

    def _oblivious(self, study_id: int) -> Select[Any]:
        """Done transfer cells from an undefended source to the same model, defended or
        not: key, matched heads, the target's robust and clean accuracy."""
        js = SpecJson(self.dialect)
        robust = aliased(MetricModel, name="robust")
        clean = aliased(MetricModel, name="clean")
        q = select(CellModel.key, *_heads(js, TARGET), robust.value, clean.value).select_from(
            CellModel
        )
        q = q.outerjoin(
            robust,
            and_(robust.cell_id == CellModel.id, robust.name == "target_robust_accuracy"),
        ).outerjoin(
            clean, and_(clean.cell_id == CellModel.id, clean.name == "target_clean_accuracy")
        )
        return (
            js.attach(q)
            .where(
                CellModel.study_id == study_id,
                CellModel.state == CellState.DONE,
                CellModel.kind == CellKind.TRANSFER,
                js.text(*SOURCE.defense_name) == "none",
                js.text(*SOURCE.model) == js.text(*TARGET.model),
            )
            .order_by(CellModel.id)
        )


# what an attack cell and its oblivious transfer cell are matched by
_MATCH = ("dataset", "eval_hash", "model", "defense", "label", "defense_params", "attack", "params")


def _heads(js: SpecJson, side: ModelSide) -> list[Any]:
    """The :data:`_MATCH` heads of a cell whose defended model is ``side`` of its spec (an
    attack cell's source, a transfer cell's target)."""
    return [
        js.text(*DATASET_LABEL),
        js.text(*EVAL_HASH),
        js.text(*side.model),
        js.text(*side.defense_name),
        js.text(*side.defense_label),
        js.text(*side.defense_params),
        js.text(*ATTACK_NAME),
        js.text(*ATTACK_PARAMS),
    ]


def _rows(attacked: Sequence[Any], oblivious: dict[tuple, tuple]) -> list[DefenseEvaluation]:
    """One :class:`DefenseEvaluation` per attack cell from rows of one metric each; where
    several transfer cells match (two ``none`` entries), the first recorded is used. An
    adapted cell names the non-adaptive cell of the same heads as its twin."""
    heads: dict[str, tuple] = {}
    metrics: dict[str, dict[str, float]] = defaultdict(dict)
    n = len(_MATCH)
    for r in attacked:
        heads.setdefault(r[0], tuple(r[1 : n + 2]))
        metrics[r[0]][r[n + 2]] = float(r[n + 3])
    twins = {h[:n]: key for key, h in heads.items() if (h[n] or "none") == "none"}
    out = []
    for key, h in heads.items():
        match, adaptive = h[:n], h[n]
        twin = twins.get(match) if adaptive and adaptive != "none" else None
        obl_key, robust, clean = oblivious.get(match, (None, None, None))
        out.append(
            DefenseEvaluation(
                cell_key=key,
                dataset=match[0],
                model=match[2],
                defense=(match[3], match[4] or match[3]),
                adaptive=adaptive or "none",
                attack=match[6],
                params_json=canonical_params(match[7]),
                metrics=metrics[key],
                oblivious_key=obl_key,
                oblivious_robust=None if robust is None else float(robust),
                oblivious_clean=None if clean is None else float(clean),
                naive_key=twin,
                naive_robust=None if twin is None else metrics[twin].get("robust_accuracy"),
            )
        )
    return out
