"""The report's per-sample section: how many targets each adversarial example fools, and the
examples that fool every target (see :mod:`orchestrator.views.samples`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from orchestrator.views import samples
from orchestrator.views.labels import attack_title
from storage import ArtifactStore, Database, StorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoolAll:
    """One example that fools every target: its dataset index, label and the source's
    prediction on it."""

    index: int
    label: int
    pred: int
    x_adv: torch.Tensor


@dataclass(frozen=True)
class JoinSummary:
    dataset: str
    attack: str
    source: str
    targets: list[str]
    n: int
    histogram: list[int]
    fool_all: int
    missing: list[str]
    images: list[FoolAll] = field(default_factory=list)


@dataclass(frozen=True)
class Joins:
    summaries: list[JoinSummary]
    note: str | None = None


def collect(
    database: Database, study_id: int, store_root: str, *, with_images: int, per_set: int = 8
) -> Joins:
    """Join every adversarial set with its targets; the first ``with_images`` sets get up to
    ``per_set`` of their fool-every-target examples. A store that cannot be read gives a
    note instead of failing the whole report."""
    store = ArtifactStore(store_root)
    try:
        joins = samples.join(database.transfer_outputs(study_id), store)
        return Joins(
            [_summary(j, store, per_set if i < with_images else 0) for i, j in enumerate(joins)]
        )
    except (StorageError, OSError, KeyError) as exc:
        log.warning("per-sample joins left out of the report: %s", exc)
        return Joins([], note=f"per-sample joins could not be read: {exc}")


def _summary(j: samples.SampleJoin, store: ArtifactStore, images: int) -> JoinSummary:
    chosen = j.fool_all()[:images]
    shown: list[FoolAll] = []
    if chosen:
        adv, _ = store.get(j.adversarial)
        shown = [
            FoolAll(
                int(adv["indices"][i]),
                int(adv["labels"][i]),
                int(adv["pred_adv"][i]),
                adv["x_adv"][i],
            )
            for i in chosen
        ]
    return JoinSummary(
        dataset=j.dataset,
        attack=attack_title(j.attack, j.params),
        source=j.source,
        targets=j.targets,
        n=len(j.indices),
        histogram=j.histogram(),
        fool_all=len(j.fool_all()),
        missing=j.missing,
        images=shown,
    )
