"""``advgrid defenses``: per defended model and attack configuration, clean accuracy, the
two non-adaptive robust accuracies and the adaptive one, their gap, and gradient-masking
flags, as a table (:func:`table`; :func:`records` for CSV) and JSON.

- **non-adaptive**: the attack run on M+D without BPDA/EOT, following autograd's gradient
  through the defense (zero through a rounding, a codec or a vote): the twin the planner
  adds beside every adapted attack cell; what a plain white-box evaluation reports;
- **oblivious**: the attack crafted on the undefended model M, evaluated on M+D (the transfer
  cell M → M+D): what the defense's number is when the attacker ignores it;
- **adaptive**: the attack run on M+D itself, through BPDA/EOT where the study asks for
  them (the attack cell on M+D);
- **gap** = the larger non-adaptive number − adaptive: the robustness a non-adaptive
  evaluation claimed and an adaptive attack took away, the obfuscation signal of Athalye,
  Carlini & Wagner (ICML 2018).

A twin is shown in its adapted row, not as a row of its own; its flags join the row's,
marked "without adaptation".

Undefended models appear too (defense ``none``): their adaptive number is the white-box one,
the baseline a defense is measured against. Flags: :mod:`orchestrator.views.masking`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from orchestrator.views import masking
from orchestrator.views.labels import attack_title, model_label
from orchestrator.views.table import Cell, Column, TableView
from storage.defense_queries import DefenseEvaluation

CAPTION = (
    "clean: M+D on clean inputs; non-adaptive: the attack run on M+D through autograd's "
    "(masked) gradient, no BPDA/EOT; oblivious: the attack crafted on M alone, evaluated on "
    "M+D; adaptive: the attack run on M+D (BPDA/EOT where set); "
    "gap = max(non-adaptive, oblivious) - adaptive"
)


@dataclass
class Row:
    """One defended model under one attack configuration."""

    dataset: str
    model: str
    defense: str
    adaptive: str
    attack: str
    params: dict[str, Any]
    n: int
    clean: float | None
    oblivious: float | None
    robust: float | None
    cell_key: str
    oblivious_key: str | None
    flags: list[masking.Flag] = field(default_factory=list)
    naive: float | None = None
    naive_key: str | None = None
    eot_samples: int | None = None

    @property
    def gap(self) -> float | None:
        """The larger of the non-adaptive numbers minus the adaptive robust accuracy; None
        without an adaptive number or any non-adaptive one."""
        claimed = [v for v in (self.naive, self.oblivious) if v is not None]
        if not claimed or self.robust is None:
            return None
        return max(claimed) - self.robust

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "defense": self.defense,
            "adaptive": self.adaptive,
            "eot_samples": self.eot_samples,
            "attack": self.attack,
            "eps": self.params.get("eps"),
            "params": self.params,
            "n": self.n,
            "clean_accuracy": self.clean,
            "non_adaptive_robust_accuracy": self.naive,
            "oblivious_robust_accuracy": self.oblivious,
            "adaptive_robust_accuracy": self.robust,
            "gap": self.gap,
            "flags": [f.to_json() for f in self.flags],
            "attack_cell_key": self.cell_key,
            "oblivious_cell_key": self.oblivious_key,
            "non_adaptive_cell_key": self.naive_key,
        }


def build(
    rows: list[DefenseEvaluation], context: list[DefenseEvaluation] | None = None
) -> list[Row]:
    """Table rows for ``rows``, in their order; flags are read from ``context`` (every
    attack cell of the study, so a filter does not hide the cells a rule compares), or from
    ``rows`` when None."""
    every = rows if context is None else context
    found = masking.flags(every)
    groups = {r.cell_key: masking.group_of(r) for r in every}
    twins = {r.naive_key for r in rows if r.naive_key is not None}
    out = []
    for r in rows:
        if r.cell_key in twins:  # shown in its adapted row
            continue
        clean = r.metrics.get("clean_accuracy", r.oblivious_clean)
        flags = list(found.get(masking.group_of(r), []))
        if r.naive_key in groups:
            flags += _without_adaptation(found.get(groups[r.naive_key], []), flags)
        out.append(
            Row(
                dataset=r.dataset,
                model=model_label(r.model, r.defense),
                defense=r.defense[1],
                adaptive=r.adaptive,
                attack=r.attack,
                params=json.loads(r.params_json),
                n=int(r.metrics.get("n", 0)),
                clean=clean,
                oblivious=r.oblivious_robust,
                robust=r.metrics.get("robust_accuracy"),
                cell_key=r.cell_key,
                oblivious_key=r.oblivious_key,
                flags=flags,
                naive=r.naive_robust,
                naive_key=r.naive_key,
                eot_samples=_eot(r),
            )
        )
    return out


def _eot(r: DefenseEvaluation) -> int | None:
    eot = r.metrics.get("eot_samples")
    return None if eot is None else int(eot)


def _without_adaptation(twin: list[masking.Flag], own: list[masking.Flag]) -> list[masking.Flag]:
    """The twin's flags that the adapted row does not raise itself, marked as such."""
    names = {f.name for f in own}
    return [
        masking.Flag(f.name, f"without adaptation: {f.reason}") for f in twin if f.name not in names
    ]


def missing_oblivious(rows: list[Row]) -> list[str]:
    """Defended models without an oblivious number (no transfer cell M → M+D done)."""
    return sorted({r.model for r in rows if r.oblivious is None and r.defense != "none"})


def _pct(v: float | None, signed: bool = False) -> str | None:
    if v is None:
        return None
    return f"{v * 100:+.1f}" if signed else f"{v * 100:.1f}"


def _cells(r: Row) -> list[Cell]:
    return [
        r.dataset,
        r.model,
        _adapts(r),
        attack_title(r.attack, r.params),
        _pct(r.clean),
        _pct(r.naive),
        _pct(r.oblivious),
        _pct(r.robust),
        _pct(r.gap, signed=True),
        ", ".join(f.name for f in r.flags),
    ]


def _adapts(r: Row) -> str | None:
    """How the attack adapted, with its EOT count (``eot×8``): an entry's ``eot_samples``
    list makes rows that differ by it alone."""
    if r.adaptive == "none":
        return None
    return r.adaptive if r.eot_samples is None else f"{r.adaptive}×{r.eot_samples}"


HEADS = [
    "dataset",
    "model",
    "adapts",
    "attack",
    "clean",
    "non-adaptive",
    "oblivious",
    "adaptive",
    "gap",
    "flags",
]
NUMERIC = slice(4, 9)


def table(rows: list[Row]) -> TableView:
    """One line per row: accuracies in %, the gap signed, and the flags' names."""
    return TableView(
        columns=[Column(head, numeric=head in HEADS[NUMERIC]) for head in HEADS],
        rows=[_cells(r) for r in rows],
        title="Defended models: accuracy (%) — clean, non-adaptive, oblivious and adaptive robust",
        caption=CAPTION,
        heading="Defended models: accuracy (%)",
        latex_caption=f"Defended models: accuracy (%). {CAPTION}",
        notes=[CAPTION + "."],
    )


def reasons(rows: list[Row]) -> list[str]:
    """``model: flag — reason`` once per defended model and flag, for under the table."""
    seen = dict.fromkeys(
        f"{r.model}{'' if r.adaptive == 'none' else f' ({r.adaptive})'}: {f.name} — {f.reason}"
        for r in rows
        for f in r.flags
    )
    return list(seen)


RECORD_COLUMNS = (
    "dataset",
    "model",
    "defense",
    "adaptive",
    "attack",
    "params",
    "n",
    "clean_accuracy",
    "non_adaptive_robust_accuracy",
    "oblivious_robust_accuracy",
    "adaptive_robust_accuracy",
    "gap",
    "flags",
    "attack_cell_key",
    "oblivious_cell_key",
    "non_adaptive_cell_key",
)


def records(rows: list[Row]) -> TableView:
    """Every row with its numbers to six places and its cells' keys (CSV)."""
    out: list[list[Cell]] = []
    for r in rows:
        nums = [r.clean, r.naive, r.oblivious, r.robust, r.gap]
        head: list[Cell] = [r.dataset, r.model, r.defense, r.adaptive, r.attack]
        head += [json.dumps(r.params, sort_keys=True), r.n]
        head += ["" if v is None else f"{v:.6f}" for v in nums]
        flags = ";".join(f.name for f in r.flags)
        out.append([*head, flags, r.cell_key, r.oblivious_key or "", r.naive_key or ""])
    return TableView(columns=[Column(c) for c in RECORD_COLUMNS], rows=out)
