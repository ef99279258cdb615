"""Robustness curves: robust accuracy against eps, steps, queries or a corruption's severity,
mean ± std over seeds.

A curve is one dataset × model (+ defense) × attack configuration with every attack
parameter fixed except the x axis and the attack's ``seed``. Cells that differ only in the
seed are repeats of one point. Minimum-norm attacks report ``robust_accuracy_eps_<b>`` for
each budget they were scored at; on an eps axis those are the curve's points.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from orchestrator.views.labels import attack_title, fmt_num, model_label
from orchestrator.views.table import Cell, Column, TableView
from storage.table_queries import BUDGET_PREFIX, AttackMetrics

X_AXES = ("eps", "steps", "max_queries", "severity")


@dataclass
class Point:
    """One x value: the mean robust accuracy over ``values`` (one per seed)."""

    x: float
    values: list[float]
    cell_keys: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds; None with one seed."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def seeds(self) -> int:
        return len(self.values)


@dataclass
class Curve:
    dataset: str
    model: str
    attack: str
    params: dict[str, Any]
    x_axis: str
    points: list[Point]

    @property
    def label(self) -> str:
        return f"{self.model} · {attack_title(self.attack, self.params)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "attack": self.attack,
            "params": self.params,
            "x": self.x_axis,
            "points": [
                {"x": p.x, "mean": p.mean, "std": p.std, "seeds": p.seeds, "values": p.values}
                for p in self.points
            ],
        }


def _points_of(row: AttackMetrics, params: dict, x_axis: str) -> list[tuple[float, float]]:
    """``(x, robust accuracy)`` pairs one attack cell contributes to a curve."""
    budgets = [
        (float(name[len(BUDGET_PREFIX) :]), v)
        for name, v in row.metrics.items()
        if name.startswith(BUDGET_PREFIX)
    ]
    if x_axis == "eps" and budgets:
        return sorted(budgets)
    x = params.get(x_axis)
    if isinstance(x, int | float) and not isinstance(x, bool) and "robust_accuracy" in row.metrics:
        return [(float(x), row.metrics["robust_accuracy"])]
    return []


def build(rows: list[AttackMetrics], x_axis: str) -> list[Curve]:
    """Curves with at least two x values, in the order their first cell was recorded."""
    if x_axis not in X_AXES:
        raise ValueError(f"x axis must be one of {', '.join(X_AXES)}, not {x_axis!r}")
    groups: dict[tuple, dict[float, dict[Any, tuple[float, str]]]] = defaultdict(dict)
    clean: dict[tuple, dict[Any, float]] = defaultdict(dict)
    derived = _derived(rows, x_axis)
    for row in rows:
        params = json.loads(row.params_json)
        skip = {x_axis, "seed", *derived[_family(row)]}
        fixed = {k: v for k, v in params.items() if k not in skip}
        gkey = (row.dataset, model_label(row.source, row.defense), row.attack, _key(fixed))
        seed = params.get("seed")
        for x, value in _points_of(row, params, x_axis):
            groups[gkey].setdefault(x, {})[seed] = (value, row.cell_key)
        if x_axis == "eps" and "clean_accuracy" in row.metrics:
            clean[gkey][seed] = row.metrics["clean_accuracy"]
    curves = []
    for gkey, by_x in groups.items():
        if x_axis == "eps" and 0.0 not in by_x and clean[gkey]:
            by_x[0.0] = {s: (v, "") for s, v in clean[gkey].items()}
        if len(by_x) < 2:
            continue
        points = [
            Point(x, [v for v, _ in seeds.values()], [k for _, k in seeds.values() if k])
            for x, seeds in sorted(by_x.items())
        ]
        dataset, model, attack, fixed_json = gkey
        curves.append(Curve(dataset, model, attack, json.loads(fixed_json), x_axis, points))
    return curves


def _family(row: AttackMetrics) -> tuple[str, str, str]:
    return (row.dataset, model_label(row.source, row.defense), row.attack)


def _derived(rows: list[AttackMetrics], x_axis: str) -> dict[tuple, set[str]]:
    """Per dataset, model and attack: the parameters that follow the x axis.

    A default that depends on the budget (PGD's ``step_size`` is a fraction of ``eps``) has
    one value per x value; it must not split a curve into one-point pieces. A parameter
    the study varied on its own takes several values at one x and stays part of the key,
    and so does every one that is not a number (``norm``: PGD in L∞ at 0.05 and 0.1 and in
    L2 at 0.5 and 1 is two curves, not one).
    """
    families: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        families[_family(row)].append(json.loads(row.params_json))
    out: dict[tuple, set[str]] = defaultdict(set)
    for family, params in families.items():
        names = {k for p in params for k in p} - {x_axis, "seed"}
        for name in names:
            if not all(_numeric(p.get(name)) for p in params):
                continue  # a norm or a kind names another attack, never a budget's default
            by_x: dict[str, set[str]] = defaultdict(set)
            for p in params:
                by_x[_key(p.get(x_axis))].add(_key(p.get(name)))
            values = set().union(*by_x.values())
            if len(values) > 1 and all(len(v) == 1 for v in by_x.values()):
                out[family].add(name)
    return out


def _numeric(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _key(params: Any) -> str:
    return json.dumps(params, sort_keys=True)


def _xs(curves: list[Curve]) -> list[float]:
    return sorted({p.x for c in curves for p in c.points})


def _value(p: Point | None) -> str | None:
    if p is None:
        return None
    text = f"{p.mean * 100:.1f}"
    return text + (f" ± {p.std * 100:.1f}" if p.std is not None else "")


def table(curves: list[Curve]) -> TableView:
    """The curves as a table: one row per curve, one column per x value (mean ± std in %)."""
    xs, axis = _xs(curves), curves[0].x_axis
    seeds = max(p.seeds for c in curves for p in c.points)
    columns = [Column("dataset"), Column("model"), Column("attack")]
    rows = []
    for c in curves:
        by_x = {p.x: p for p in c.points}
        rows.append(
            [
                c.dataset,
                c.model,
                attack_title(c.attack, c.params),
                *(_value(by_x.get(x)) for x in xs),
            ]
        )
    return TableView(
        columns=[*columns, *(Column(f"{axis}={fmt_num(x)}", numeric=True) for x in xs)],
        rows=rows,
        title=f"Robust accuracy (%) against {axis}"
        + (f", mean ± std over up to {seeds} seeds" if seeds > 1 else ""),
        heading=f"Robust accuracy (%) against {axis}; mean ± std over seeds where repeated",
    )


RECORD_COLUMNS = ("dataset", "model", "attack", "params", "x_axis", "x", "mean", "std", "seeds")


def records(curves: list[Curve]) -> TableView:
    """One row per point of every curve (CSV)."""
    rows: list[list[Cell]] = []
    for c in curves:
        params = json.dumps(c.params, sort_keys=True)
        for p in c.points:
            std = "" if p.std is None else f"{p.std:.6f}"
            mean = f"{p.mean:.6f}"
            rows.append([c.dataset, c.model, c.attack, params, c.x_axis, p.x, mean, std, p.seeds])
    return TableView(columns=[Column(c) for c in RECORD_COLUMNS], rows=rows)
