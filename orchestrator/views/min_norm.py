"""The smallest perturbation that fools a defended model, per sample, over every attack on it.

For each dataset × model (+ defense), every done attack cell on that defended model is read
back from the store (its adversarial set) and each sample's norm ``‖x_adv − x‖`` is taken
where the stored prediction is wrong. A sample's minimum is 0 when the clean input is
already misclassified, the smallest such norm over the attacks otherwise, and infinite when no
attack fooled it (never averaged: read through the budgets). Robust accuracy at a budget b
is the share of samples whose minimum exceeds b: the worst case over all attacks, adaptive
ones and their non-adaptive twins alike, the MLVGM paper's headline metric (Serez et al.
2025) and the per-sample worst case a reviewer asks for. The clean images are reloaded from
the dataset the cells name, so the norms are recomputed exactly from stored examples.
"""

from __future__ import annotations

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
from storage.table_queries import AttackOutputs

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
            "n": self.n,
            "median": _json_num(self.median()),
            "never_fooled": int((~torch.isfinite(self.minimum)).sum()),
            "clean_errors": int((self.minimum == 0).sum()),
            "accuracy": {fmt_num(b): self.accuracy(b) for b in budgets},
            "minimum": [_json_num(float(v)) for v in self.minimum],
            "cell_keys": self.cell_keys,
        }


def _json_num(v: float) -> float | None:
    return None if math.isinf(v) else v


def build(
    outputs: Sequence[AttackOutputs], store: ArtifactStore, norm: str = "l2"
) -> list[MinNorm]:
    """The per-sample minimum ``norm`` of every defended model the attack cells attack."""
    from tasks.cells.worker import load_dataset  # tasks: only when images are needed

    order = NORMS[norm]
    groups: dict[tuple[str, str, tuple[str, str]], list[AttackOutputs]] = defaultdict(list)
    for out in outputs:
        groups[(out.dataset, out.source, out.defense)].append(out)
    rows = []
    for (dataset, source, defense), cells in groups.items():
        data, _ = load_dataset(cells[0].dataset_spec)
        best: torch.Tensor | None = None
        indices: torch.Tensor | None = None
        for cell in cells:
            tensors, _ = store.get(cell.adversarial)
            if indices is None:
                indices = tensors["indices"]
            elif not torch.equal(indices, tensors["indices"]):
                raise AdvgridError(
                    f"attack cells on {model_label(source, defense)} ({dataset}) evaluated "
                    f"different samples (cell {cell.cell_key[:12]}): their minimum norms "
                    "cannot be compared per sample"
                )
            x = data.images(tensors["indices"]).double()
            dist = (tensors["x_adv"].double() - x).flatten(1).norm(p=order, dim=1)
            labels = tensors["labels"]
            value = torch.where(tensors["pred_adv"] != labels, dist, math.inf)
            value = torch.where(tensors["pred_clean"] != labels, 0.0, value)
            best = value if best is None else torch.minimum(best, value)
        assert best is not None
        rows.append(
            MinNorm(
                dataset=dataset,
                model=model_label(source, defense),
                defense=defense[1],
                attacks=sorted({c.attack for c in cells}),
                cell_keys=[c.cell_key for c in cells],
                minimum=best,
            )
        )
    return rows


def table(rows: Sequence[MinNorm], budgets: Sequence[float], norm: str) -> TableView:
    """One line per defended model: robust accuracy (%) at each budget, worst case over its
    attack cells, and the median minimum norm."""
    heads = ["dataset", "model", "attacks", "cells", "n", f"median {norm}"]
    heads += [f"≤ {fmt_num(b)}" for b in budgets]
    numeric = set(heads[3:])
    caption = (
        f"robust accuracy (%) at each {norm} budget: samples no attack cell on the model "
        "fooled with a smaller perturbation (clean errors count as fooled at 0)"
    )
    return TableView(
        columns=[Column(h, numeric=h in numeric) for h in heads],
        rows=[
            [
                r.dataset,
                r.model,
                ", ".join(r.attacks),
                len(r.cell_keys),
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
