"""The smallest perturbation that fools a defended model, per sample, over every attack on it.

For each dataset × model (+ defense), every done attack cell on that defended model is read
back from the store (its adversarial set) and each sample's norm ``‖x_adv − x‖`` is taken
where the stored prediction is wrong. A sample's minimum is 0 when the clean input is
already misclassified, the smallest such norm over the attacks otherwise, and infinite when no
attack fooled it (never averaged: read through the budgets). Robust accuracy at a budget b
is the share of samples whose minimum exceeds b: the worst case over all attacks, adaptive
ones and their non-adaptive twins alike, the MLVGM paper's headline metric (Serez et al.
2025) and the per-sample worst case a reviewer asks for. Done transfer cells onto the
defended model count too (unless left out): examples crafted on another model or on another
defense of the same model (``vae_purify``'s deterministic α = 0 pipeline as a surrogate for
``mlvgm_purify``), judged by the target's stored predictions. The clean images are reloaded
from the dataset the cells name, so the norms are recomputed exactly from stored examples.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from orchestrator.errors import AdvgridError
from orchestrator.views.labels import fmt_num, model_label
from orchestrator.views.table import Column, TableView
from storage import ArtifactStore
from storage.table_queries import AttackOutputs, TransferOutputs

NORMS = {"l2": 2.0, "linf": math.inf, "l1": 1.0}
SLACK = 1e-6  # relative and absolute: a budget's float32 rounding
DEFAULT_BUDGETS = {"l2": (0.5, 1.0, 2.0), "linf": (0.05, 0.1, 0.2), "l1": (2.0, 4.0, 8.0)}


@dataclass
class MinNorm:
    """One defended model's per-sample minimum norms over ``cells`` attack cells."""

    dataset: str
    model: str
    defense: str
    attacks: list[str]
    cell_keys: list[str]
    minimum: torch.Tensor  # float64 per sample; inf where no attack succeeded
    transferred_from: list[str] = dataclasses.field(default_factory=list)
    transfer_keys: list[str] = dataclasses.field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.minimum)

    def accuracy(self, budget: float) -> float:
        """The share of samples no attack fooled within ``budget`` (a perturbation projected
        onto the budget in float32 may overshoot it by a rounding: :data:`SLACK`)."""
        return float((self.minimum > budget * (1 + SLACK) + SLACK).double().mean())

    def median(self) -> float:
        """The median minimum norm (inf when at least half the samples were never fooled)."""
        return float(self.minimum.median())

    def to_json(self, budgets: Sequence[float]) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "defense": self.defense,
            "attacks": self.attacks,
            "cells": len(self.cell_keys),
            "transferred_from": self.transferred_from,
            "transfer_cells": len(self.transfer_keys),
            "n": self.n,
            "median": _json_num(self.median()),
            "never_fooled": int((~torch.isfinite(self.minimum)).sum()),
            "clean_errors": int((self.minimum == 0).sum()),
            "accuracy": {fmt_num(b): self.accuracy(b) for b in budgets},
            "minimum": [_json_num(float(v)) for v in self.minimum],
            "cell_keys": self.cell_keys,
            "transfer_cell_keys": self.transfer_keys,
        }


def _json_num(v: float) -> float | None:
    return None if math.isinf(v) else v


def build(
    outputs: Sequence[AttackOutputs],
    store: ArtifactStore,
    norm: str = "l2",
    transfers: Sequence[TransferOutputs] = (),
) -> list[MinNorm]:
    """The per-sample minimum ``norm`` of every defended model the attack cells attack, over
    its attack cells and the ``transfers`` onto it."""
    from tasks.cells.worker import load_dataset  # tasks: only when images are needed

    order = NORMS[norm]
    groups: dict[tuple[str, str, tuple[str, str]], list[AttackOutputs]] = defaultdict(list)
    for out in outputs:
        groups[(out.dataset, out.source, out.defense)].append(out)
    onto: dict[tuple[str, str, tuple[str, str]], list[TransferOutputs]] = defaultdict(list)
    for t in transfers:
        if t.predictions is not None:  # recorded before advgrid kept per-sample outcomes
            onto[(t.dataset, t.target, t.target_defense)].append(t)
    rows = []
    for (dataset, source, defense), cells in groups.items():
        data, _ = load_dataset(cells[0].dataset_spec)
        label = model_label(source, defense)
        mine = [
            t
            for t in onto.get((dataset, source, defense), [])
            if (t.source, t.source_defense) != (source, defense)
        ]
        # (cell key, the adversarial set, the predictions that judge it: the target's for a
        # transfer cell, the set's own for an attack cell)
        judged = [(c.cell_key, c.adversarial, c.adversarial) for c in cells]
        judged += [(t.cell_key, t.adversarial, str(t.predictions)) for t in mine]
        best: torch.Tensor | None = None
        indices: torch.Tensor | None = None
        for key, adversarial, predictions in judged:
            adv, _ = store.get(adversarial)
            pred = adv if predictions == adversarial else store.get(predictions)[0]
            if indices is None:
                indices = pred["indices"]
            elif not torch.equal(indices, pred["indices"]):
                raise AdvgridError(
                    f"cells on {label} ({dataset}) evaluated different samples (cell "
                    f"{key[:12]}): their minimum norms cannot be compared per sample"
                )
            value = _minimum(adv, pred, data.images(adv["indices"]), order)
            best = value if best is None else torch.minimum(best, value)
        assert best is not None
        rows.append(
            MinNorm(
                dataset=dataset,
                model=label,
                defense=defense[1],
                attacks=sorted({c.attack for c in cells}),
                cell_keys=[c.cell_key for c in cells],
                minimum=best,
                transferred_from=sorted({model_label(t.source, t.source_defense) for t in mine}),
                transfer_keys=[t.cell_key for t in mine],
            )
        )
    return rows


def _minimum(
    adv: dict[str, torch.Tensor], pred: dict[str, torch.Tensor], x: torch.Tensor, order: float
) -> torch.Tensor:
    """Per sample of one adversarial set judged by ``pred`` (``pred_adv``, ``pred_clean``):
    0 where the clean input is misclassified, the perturbation's norm where the example
    fools, inf otherwise."""
    labels = adv["labels"]
    dist = (adv["x_adv"].double() - x.double()).flatten(1).norm(p=order, dim=1)
    value = torch.where(pred["pred_adv"] != labels, dist, math.inf)
    return torch.where(pred["pred_clean"] != labels, 0.0, value)


def table(rows: Sequence[MinNorm], budgets: Sequence[float], norm: str) -> TableView:
    """One line per defended model: robust accuracy (%) at each budget, worst case over its
    attack cells, and the median minimum norm."""
    heads = ["dataset", "model", "attacks", "transferred from", "cells", "n", f"median {norm}"]
    heads += [f"≤ {fmt_num(b)}" for b in budgets]
    numeric = set(heads[4:])
    caption = (
        f"robust accuracy (%) at each {norm} budget: samples that no attack cell on the "
        "model and no transfer cell onto it fooled with a smaller perturbation (clean errors "
        "count as fooled at 0)"
    )
    return TableView(
        columns=[Column(h, numeric=h in numeric) for h in heads],
        rows=[
            [
                r.dataset,
                r.model,
                ", ".join(r.attacks),
                _sources(r.transferred_from),
                len(r.cell_keys) + len(r.transfer_keys),
                r.n,
                "∞" if math.isinf(r.median()) else f"{r.median():.3f}",
                *(f"{100 * r.accuracy(b):.1f}" for b in budgets),
            ]
            for r in rows
        ],
        title=f"Minimum {norm} per sample over every attack",
        caption=caption,
        heading=f"Minimum {norm} per sample over every attack",
        notes=[caption + "."],
    )


def _sources(names: Sequence[str]) -> str:
    """The models transfer cells came from, named up to three (json lists them all)."""
    if len(names) <= 3:
        return ", ".join(names)
    return f"{len(names)} models"


def records(rows: Sequence[MinNorm]) -> TableView:
    """CSV: one row per defended model and sample, with its minimum norm (empty: never)."""
    return TableView(
        columns=[Column(h) for h in ("dataset", "model", "sample", "minimum")],
        rows=[
            [r.dataset, r.model, i, None if math.isinf(v) else float(v)]
            for r in rows
            for i, v in enumerate(r.minimum.tolist())
        ],
    )
