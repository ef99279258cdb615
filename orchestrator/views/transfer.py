"""Transfer matrices built from the counts the index returns, with Wilson intervals, and the
tables they print as (:func:`table`; :func:`records` for CSV)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from orchestrator.views.labels import attack_title, model_label
from orchestrator.views.table import Cell, Column, Faint, Interval, TableView
from storage.table_queries import TransferCount

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (95 % by default).

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0 or n,
    which transfer rates often are. ``n == 0`` has no interval: ``(nan, nan)``.
    """
    if n <= 0:
        return math.nan, math.nan
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Entry:
    """One matrix entry: ``fooled`` of ``n`` counted examples."""

    fooled: int
    n: int
    cell_key: str

    @property
    def rate(self) -> float | None:
        return self.fooled / self.n if self.n else None

    @property
    def ci(self) -> tuple[float, float] | None:
        return wilson(self.fooled, self.n) if self.n else None


@dataclass
class Matrix:
    """Transfer rates of one attack configuration: ``entries[i][j]`` is source i → target j."""

    dataset: str
    attack: str
    params: dict[str, Any]
    sources: list[str]
    targets: list[str]
    entries: list[list[Entry | None]]
    denominator: str

    @property
    def rates(self) -> list[list[float | None]]:
        return [[e.rate if e else None for e in row] for row in self.entries]

    def to_json(self) -> dict[str, Any]:
        def grid(fn: Any) -> list[list[Any]]:
            return [[fn(e) if e else None for e in row] for row in self.entries]

        return {
            "dataset": self.dataset,
            "attack": self.attack,
            "eps": self.params.get("eps"),
            "params": self.params,
            "denominator": self.denominator,
            "sources": self.sources,
            "targets": self.targets,
            "matrix": self.rates,
            "n": grid(lambda e: e.n),
            "fooled": grid(lambda e: e.fooled),
            "ci95": grid(lambda e: list(e.ci) if e.ci else None),
        }

    def title(self) -> str:
        return f"{attack_title(self.attack, self.params)} on {self.dataset}"

    def caption(self) -> str:
        return (
            f"{self.title()}: transfer rate (%) of source i's examples on target j; "
            f"denominator {self.denominator} ({DENOMINATOR_TEXT[self.denominator]}); "
            "Wilson 95 % intervals"
        )


DENOMINATOR_TEXT = {
    "source_success": "the examples that fooled the source",
    "all": "every example",
    "target_correct": "the examples whose clean input the target classified correctly",
}


def matrices(counts: Iterable[TransferCount], denominator: str) -> list[Matrix]:
    """One matrix per (dataset, attack configuration), in first-seen order."""
    groups: dict[tuple[str, str, str], dict[tuple[str, str], Entry]] = {}
    for c in counts:
        group = groups.setdefault((c.dataset, c.attack, c.params_json), {})
        src = model_label(c.source, c.source_defense)
        tgt = model_label(c.target, c.target_defense)
        group[(src, tgt)] = Entry(c.fooled, c.n, c.cell_key)
    out = []
    for (dataset, attack, params), cells in groups.items():
        sources = sorted({s for s, _ in cells})
        targets = sorted({t for _, t in cells})
        entries = [[cells.get((s, t)) for t in targets] for s in sources]
        out.append(
            Matrix(dataset, attack, json.loads(params), sources, targets, entries, denominator)
        )
    return out


def _pct(v: float) -> str:
    return f"{v * 100:.1f}"


def table(m: Matrix) -> TableView:
    """The matrix as a table: sources down, targets across, rate % with interval per entry."""
    ns = sorted({e.n for row in m.entries for e in row if e})
    return TableView(
        columns=[
            Column("source \\ target", style="bold", latex_head=r"source $\backslash$ target"),
            *(Column(t, numeric=True) for t in m.targets),
        ],
        rows=[[s, *(_cell(e) for e in row)] for s, row in zip(m.sources, m.entries, strict=True)],
        title=f"{m.title()} — transfer rate, denominator: {m.denominator}",
        caption="rate % \\[Wilson 95 % interval] (n counted)",
        heading=m.caption(),
        notes=[_n_range(ns)] if ns else [],
    )


def _n_range(ns: list[int]) -> str:
    return f"n per entry: {ns[0]}–{ns[-1]}" if len(ns) > 1 else f"n per entry: {ns[0]}"


def _cell(e: Entry | None) -> Cell:
    if e is None:
        return None
    if e.ci is None:
        return Faint("n=0")
    lo, hi = e.ci
    return Interval(_pct(e.rate or 0.0), _pct(lo), _pct(hi), e.n)


RECORD_COLUMNS = (
    "dataset",
    "attack",
    "params",
    "denominator",
    "source",
    "target",
    "rate",
    "n",
    "fooled",
    "ci95_low",
    "ci95_high",
    "cell_key",
)


def records(ms: list[Matrix]) -> TableView:
    """One row per entry of every matrix in ``ms``, with its counts and interval (CSV)."""
    rows = []
    for m in ms:
        head = [m.dataset, m.attack, json.dumps(m.params, sort_keys=True), m.denominator]
        for s, row in zip(m.sources, m.entries, strict=True):
            rows += [[*head, s, t, *_record(e)] for t, e in zip(m.targets, row, strict=True)]
    return TableView(columns=[Column(c) for c in RECORD_COLUMNS], rows=rows)


def _record(e: Entry | None) -> list[Any]:
    if e is None:
        return ["", "", "", "", "", ""]
    lo, hi = e.ci or (math.nan, math.nan)
    rate = "" if e.rate is None else f"{e.rate:.6f}"
    ci = ["", ""] if e.ci is None else [f"{lo:.6f}", f"{hi:.6f}"]
    return [rate, e.n, e.fooled, *ci, e.cell_key]
