"""Result rows of ``advgrid results`` and the tables they print as (transfer matrices:
:mod:`orchestrator.views.transfer`)."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.views.labels import fmt_num
from orchestrator.views.table import Cell, Column, Items, TableView
from storage import CellRow
from storage.enums import CellKind
from tasks.cells import CELL_KINDS


def _field(spec: dict[str, Any], name: str, key: str = "name") -> Any:
    """``spec[name]`` when it is a name, ``spec[name][key]`` when it is a component; None
    when the spec has no such field (a kind beyond the built-in three may not)."""
    value = spec.get(name)
    return value.get(key) if isinstance(value, dict) else value


def row(cell: CellRow) -> dict[str, Any]:
    """One cell as a plain row (the shape of ``advgrid results --format json``)."""
    spec = json.loads(cell.spec_json)
    attack = spec.get("attack") or {}
    out: dict[str, Any] = {
        "cell_key": cell.key,
        "kind": cell.kind,
        "state": cell.state,
        "dataset": _field(spec, "dataset", "label"),
        "model": spec.get("target") or spec.get("source") or _field(spec, "model"),
        "defense": _field(spec, "target_defense") or _field(spec, "defense"),
        "attack": attack.get("name"),
        "params": attack.get("params", {}),
        "metrics": dict(cell.metrics),
        "attempts": cell.attempts,
        "duration_s": cell.duration_s,
    }
    kind = CELL_KINDS.get(cell.kind)
    if kind is not None and kind.row_fields is not None:
        out.update(kind.row_fields(spec))
    if cell.error:
        out["error"] = cell.error
    return out


RESULT_COLUMNS = ("kind", "state", "dataset", "model", "defense", "attack", "params")


def key_metrics(kind: str) -> tuple[str, ...]:
    """The metrics a results line shows for a cell of ``kind`` (its kind's summary)."""
    return CELL_KINDS[kind].summary_metrics if kind in CELL_KINDS else ()


def _short_params(params: dict) -> str:
    shown = ("arch", "norm", "eps", "steps", "epochs", "max_queries")
    text = " ".join(f"{k}={fmt_num(v)}" for k, v in params.items() if k in shown)
    return text + (" targeted" if params.get("targeted") else "")


def table(rows: list[dict[str, Any]]) -> TableView:
    """One line per cell: what it is, its short params and its kind's key metrics."""
    return TableView(
        columns=[Column(c) for c in (*RESULT_COLUMNS, "source→target", "metrics")],
        rows=[_cells(r) for r in rows],
    )


def _cells(r: dict[str, Any]) -> list[Cell]:
    names = key_metrics(r["kind"])
    metrics = tuple(f"{n}={r['metrics'][n]:.3f}" for n in names if n in r["metrics"])
    st = f"{r['source']}→{r['target']}" if r["kind"] == CellKind.TRANSFER else ""
    return [
        r["kind"],
        r["state"],
        r["dataset"] or "",
        r["model"] or "",
        r["defense"] or "",
        r["attack"] or "",
        _short_params(r["params"]),
        st,
        Items(metrics),
    ]


def records(rows: list[dict[str, Any]]) -> TableView:
    """Every row with all its metrics, one column per metric name (CSV)."""
    names = sorted({n for r in rows for n in r["metrics"]})
    heads = ["cell_key", *RESULT_COLUMNS, "source", "target", *names]
    out = [
        [
            r["cell_key"],
            *(json.dumps(r[c], sort_keys=True) if c == "params" else r[c] for c in RESULT_COLUMNS),
            r.get("source", ""),
            r.get("target", ""),
            *(r["metrics"].get(n, "") for n in names),
        ]
        for r in rows
    ]
    return TableView(columns=[Column(h) for h in heads], rows=out)


ACCURACIES = ("clean (%)", "robust (%)")


def accuracy_table(rows: list[dict[str, Any]]) -> TableView:
    """Attack rows only: clean and robust accuracy (%) per model and attack.

    Only attack cells have these numbers; train and transfer rows are left to the other
    formats (``advgrid transfer --format latex`` for the matrices).
    """
    heads = ["dataset", "model", "defense", "attack"]
    out: list[list[Cell]] = []
    for r in rows:
        m = r["metrics"]
        if r["kind"] != CellKind.ATTACK or "robust_accuracy" not in m:
            continue
        attack = f"{r['attack']} {_short_params(r['params'])}".strip()
        names = [r["dataset"] or "", r["model"] or "", r["defense"] or "", attack]
        out.append(
            [*names, f"{m['clean_accuracy'] * 100:.1f}", f"{m['robust_accuracy'] * 100:.1f}"]
        )
    columns = [Column(h) for h in heads] + [
        Column(f"{h} (%)", numeric=True) for h in ("clean", "robust")
    ]
    return TableView(columns=columns, rows=out)
