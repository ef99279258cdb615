"""Per-sample joins across targets: how many targets each adversarial example fools.

The index says which transfer cells evaluated which adversarial set
(:meth:`storage.Database.transfer_outputs`); the per-sample outcomes live in each transfer
cell's ``predictions`` artifact. An adversarial set (one source, one attack configuration)
joined with its targets gives, per example, the targets it fooled; the examples that fool
every target are the ones a paper shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
from matplotlib.figure import Figure

from orchestrator.errors import AdvgridError
from orchestrator.views.labels import attack_title, model_label
from orchestrator.views.table import Cell, Column, TableView
from storage import ArtifactStore
from storage.table_queries import TransferOutputs


@dataclass
class SampleJoin:
    """One adversarial set joined with its targets.

    Attributes:
        fooled: ``(n, len(targets))`` booleans: example i fooled target j.
        missing: Targets whose transfer cell has no per-sample predictions (recorded by an
            older advgrid): left out of ``targets``.
    """

    dataset: str
    attack: str
    params: dict[str, Any]
    source: str
    adversarial: str
    targets: list[str]
    indices: torch.Tensor
    fooled: torch.Tensor
    missing: list[str] = field(default_factory=list)

    @property
    def counts(self) -> torch.Tensor:
        """How many targets each example fools."""
        return self.fooled.sum(1)

    def histogram(self) -> list[int]:
        """``h[k]``: examples that fool exactly k targets, k = 0 … len(targets)."""
        return torch.bincount(self.counts, minlength=len(self.targets) + 1).tolist()

    def fool_all(self) -> list[int]:
        """Positions (in this set) of the examples that fool every target."""
        return torch.nonzero(self.counts == len(self.targets)).flatten().tolist()

    def title(self) -> str:
        return f"{attack_title(self.attack, self.params)} from {self.source} on {self.dataset}"

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "attack": self.attack,
            "params": self.params,
            "source": self.source,
            "targets": self.targets,
            "missing_targets": self.missing,
            "n": len(self.indices),
            "histogram": self.histogram(),
            "fool_all": [int(self.indices[i]) for i in self.fool_all()],
            "samples": [
                {
                    "index": int(self.indices[i]),
                    "fooled": [t for t, f in zip(self.targets, row.tolist(), strict=True) if f],
                }
                for i, row in enumerate(self.fooled)
            ],
        }


def join(
    rows: list[TransferOutputs], store: ArtifactStore, targets: set[str] | None = None
) -> list[SampleJoin]:
    """Join every adversarial set in ``rows`` with its targets (only ``targets`` if given)."""
    groups: dict[str, list[TransferOutputs]] = {}
    for r in rows:
        if targets is None or model_label(r.target, r.target_defense) in targets:
            groups.setdefault(r.adversarial, []).append(r)
    return [_join_one(members, store) for members in groups.values()]


def _join_one(members: list[TransferOutputs], store: ArtifactStore) -> SampleJoin:
    first = members[0]
    by_target: dict[str, TransferOutputs] = {
        model_label(r.target, r.target_defense): r for r in members
    }
    names = sorted(t for t, r in by_target.items() if r.predictions)
    columns, indices = [], None
    for name in names:
        tensors, _ = store.get(by_target[name].predictions or "")
        if indices is not None and not torch.equal(indices, tensors["indices"]):
            raise AdvgridError(
                f"predictions of {first.source} → {name} cover other samples than the "
                f"adversarial set {first.adversarial[:12]}; run `advgrid artifacts verify`"
            )
        indices = tensors["indices"]
        columns.append(tensors["fooled"].bool())
    if indices is None:
        indices = store.get(first.adversarial)[0]["indices"]
    fooled = torch.stack(columns, 1) if columns else torch.zeros(len(indices), 0, dtype=torch.bool)
    return SampleJoin(
        dataset=first.dataset,
        attack=first.attack,
        params=json.loads(first.params_json),
        source=model_label(first.source, first.source_defense),
        adversarial=first.adversarial,
        targets=names,
        indices=indices,
        fooled=fooled,
        missing=sorted(t for t, r in by_target.items() if not r.predictions),
    )


def table(joins: list[SampleJoin]) -> TableView:
    """One line per adversarial set: its targets, the histogram and how many fool them all."""
    heads = ("dataset", "attack", "source", "targets", "n", "histogram", "fool all")
    rows = []
    for j in joins:
        n, everyone = len(j.indices), len(j.fool_all())
        rows.append(
            [
                j.dataset,
                attack_title(j.attack, j.params),
                j.source,
                str(len(j.targets)),
                str(n),
                " ".join(str(h) for h in j.histogram()),
                f"{everyone} ({everyone / n * 100:.1f}%)" if n else "0",
            ]
        )
    return TableView(
        columns=[Column(h, numeric=h in ("targets", "n", "fool all")) for h in heads],
        rows=rows,
        title="How many targets each adversarial example fools",
        caption="histogram: examples fooling 0, 1, … k targets",
    )


RECORD_COLUMNS = (
    "dataset",
    "attack",
    "params",
    "source",
    "index",
    "n_targets",
    "n_fooled",
    "fooled",
)


def records(joins: list[SampleJoin]) -> TableView:
    """One row per adversarial example: which targets it fooled (CSV)."""
    rows: list[list[Cell]] = []
    for j in joins:
        params = json.dumps(j.params, sort_keys=True)
        for i, row in enumerate(j.fooled.tolist()):
            hit = [t for t, f in zip(j.targets, row, strict=True) if f]
            index = int(j.indices[i])
            rows.append([j.dataset, j.attack, params, j.source, index, len(j.targets), len(hit)])
            rows[-1].append(";".join(hit))
    return TableView(columns=[Column(c) for c in RECORD_COLUMNS], rows=rows)


def grid(j: SampleJoin, store: ArtifactStore, limit: int = 64) -> Figure | None:
    """The examples that fool every target, as an image grid (None when there are none).

    Each tile is the adversarial input, captioned with its dataset index, true label and
    the source's prediction.
    """
    chosen = j.fool_all()[:limit]
    if not chosen:
        return None
    adv, _ = store.get(j.adversarial)
    cols = min(8, len(chosen))
    rows = (len(chosen) + cols - 1) // cols
    fig = Figure(figsize=(1.3 * cols, 1.5 * rows + 0.4), dpi=120, layout="constrained")
    fig.suptitle(f"fool all {len(j.targets)} targets: {j.title()}", fontsize=8)
    for n, i in enumerate(chosen):
        ax = fig.add_subplot(rows, cols, n + 1)
        ax.imshow(image(adv["x_adv"][i]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        label, pred = int(adv["labels"][i]), int(adv["pred_adv"][i])
        ax.set_title(f"#{int(adv['indices'][i])} {label}→{pred}", fontsize=6)
        ax.axis("off")
    return fig


def image(x: torch.Tensor) -> Any:
    """A ``(C, H, W)`` tensor in [0, 1] as an array matplotlib shows (gray or RGB)."""
    x = x.detach().float().clamp(0, 1).cpu()
    return x[0].numpy() if x.shape[0] == 1 else x[:3].permute(1, 2, 0).numpy()
