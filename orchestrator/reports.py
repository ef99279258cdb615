"""Result rows and transfer matrices built from the SQL index, and their renderings."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from orchestrator.errors import AdvgridError
from storage import CellRow

DENOMINATORS = ("source_success", "all", "target_correct")


def _model_label(model: str, defense: dict | None) -> str:
    if not defense or defense.get("name") == "none":
        return model
    return f"{model}+{defense.get('label', defense['name'])}"


def row(cell: CellRow) -> dict[str, Any]:
    """One cell as a plain row (the shape of ``advgrid results --format json``)."""
    spec = json.loads(cell.spec_json)
    attack = spec.get("attack") or {}
    out: dict[str, Any] = {
        "cell_key": cell.key,
        "kind": cell.kind,
        "state": cell.state,
        "dataset": (spec.get("dataset") or {}).get("label"),
        "model": spec.get("target") or spec.get("source") or (spec.get("model") or {}).get("name"),
        "defense": (spec.get("target_defense") or spec.get("defense") or {}).get("name"),
        "attack": attack.get("name"),
        "params": attack.get("params", {}),
        "metrics": dict(cell.metrics),
        "attempts": cell.attempts,
        "duration_s": cell.duration_s,
    }
    if cell.kind == "train":
        out["params"] = {"arch": spec["model"]["arch"], **spec["model"]["params"], **spec["train"]}
    if cell.kind == "transfer":
        out["source"] = _model_label(spec["source"], spec.get("defense"))
        out["target"] = _model_label(spec["target"], spec.get("target_defense"))
    if cell.error:
        out["error"] = cell.error
    return out


@dataclass
class Matrix:
    """Transfer rates of one attack configuration: ``rates[i][j]`` source i → target j."""

    dataset: str
    attack: str
    params: dict[str, Any]
    sources: list[str]
    targets: list[str]
    rates: list[list[float | None]]
    counts: list[list[int | None]]
    denominator: str

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "attack": self.attack,
            "eps": self.params.get("eps"),
            "params": self.params,
            "denominator": self.denominator,
            "sources": self.sources,
            "targets": self.targets,
            "matrix": self.rates,
            "n": self.counts,
        }

    def title(self) -> str:
        shown = {
            k: v
            for k, v in self.params.items()
            if k in ("norm", "eps", "steps")
            or (k == "targeted" and v)
            or (k == "restarts" and v != 1)
        }
        args = ", ".join(f"{k}={_fmt_num(v)}" for k, v in shown.items())
        return (
            f"{self.attack}({args}) on {self.dataset} — transfer rate, "
            f"denominator: {self.denominator}"
        )


def _fmt_num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _matches(params: dict, eps: float | None, extra: dict[str, str]) -> bool:
    if eps is not None and not math.isclose(
        float(params.get("eps", math.nan)), eps, rel_tol=1e-6, abs_tol=1e-9
    ):
        return False
    return all(str(params.get(k)).lower() == v.lower() for k, v in extra.items())


def transfer_matrices(
    cells: list[CellRow],
    *,
    attack: str | None = None,
    eps: float | None = None,
    where: dict[str, str] | None = None,
    denominator: str = "source_success",
) -> list[Matrix]:
    """One matrix per (dataset, attack configuration) among the done transfer cells."""
    if denominator not in DENOMINATORS:
        raise AdvgridError(
            f"unknown denominator {denominator!r}; use one of {', '.join(DENOMINATORS)}"
        )
    groups: dict[str, dict[str, Any]] = {}
    for cell in cells:
        if cell.kind != "transfer" or cell.state != "done":
            continue
        spec = json.loads(cell.spec_json)
        a = spec["attack"]
        if (attack and a["name"] != attack) or not _matches(a["params"], eps, where or {}):
            continue
        gkey = json.dumps([spec["dataset"]["label"], a], sort_keys=True)
        g = groups.setdefault(gkey, {"dataset": spec["dataset"]["label"], "attack": a, "cells": {}})
        src = _model_label(spec["source"], spec["defense"])
        tgt = _model_label(spec["target"], spec["target_defense"])
        g["cells"][(src, tgt)] = cell.metrics
    return [_matrix(g, denominator) for g in groups.values()]


def _matrix(group: dict[str, Any], denominator: str) -> Matrix:
    cells = group["cells"]
    sources = sorted({s for s, _ in cells})
    targets = sorted({t for _, t in cells})
    rates: list[list[float | None]] = []
    counts: list[list[int | None]] = []
    for s in sources:
        m = [cells.get((s, t)) for t in targets]
        n = [int(x[f"n_{denominator}"]) if x else None for x in m]
        counts.append(n)
        rates.append(
            [x[f"fooled_{denominator}"] / k if x and k else None for x, k in zip(m, n, strict=True)]
        )
    a = group["attack"]
    return Matrix(
        group["dataset"], a["name"], a["params"], sources, targets, rates, counts, denominator
    )


def matrix_table(m: Matrix) -> Table:
    table = Table(title=m.title(), title_justify="left")
    table.add_column("source \\ target", style="bold")
    for t in m.targets:
        table.add_column(t, justify="right")
    for s, rates, counts in zip(m.sources, m.rates, m.counts, strict=True):
        cells = [
            "—" if r is None else f"{r * 100:5.1f}% [dim](n={n})[/]"
            for r, n in zip(rates, counts, strict=True)
        ]
        table.add_row(s, *cells)
    return table


def matrix_csv(matrices: list[Matrix]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "attack", "params", "denominator", "source", "target", "rate", "n"])
    for m in matrices:
        for s, rates, counts in zip(m.sources, m.rates, m.counts, strict=True):
            for t, r, n in zip(m.targets, rates, counts, strict=True):
                w.writerow(
                    [
                        m.dataset,
                        m.attack,
                        json.dumps(m.params, sort_keys=True),
                        m.denominator,
                        s,
                        t,
                        "" if r is None else f"{r:.6f}",
                        "" if n is None else n,
                    ]
                )
    return buf.getvalue()


def matrix_markdown(m: Matrix) -> str:
    head = "| source \\ target | " + " | ".join(m.targets) + " |"
    sep = "|---|" + "---:|" * len(m.targets)
    lines = [f"**{m.title()}**", "", head, sep]
    for s, rates in zip(m.sources, m.rates, strict=True):
        vals = ["—" if r is None else f"{r * 100:.1f}%" for r in rates]
        lines.append(f"| {s} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


RESULT_COLUMNS = ("kind", "state", "dataset", "model", "defense", "attack", "params")
KEY_METRICS = {
    "train": ("train_accuracy", "eval_accuracy"),
    "attack": ("clean_accuracy", "robust_accuracy", "success_rate_on_correct"),
    "transfer": ("transfer_rate_source_success", "target_robust_accuracy"),
}


def _short_params(params: dict) -> str:
    shown = ("arch", "norm", "eps", "steps", "epochs", "max_queries")
    text = " ".join(f"{k}={_fmt_num(v)}" for k, v in params.items() if k in shown)
    return text + (" targeted" if params.get("targeted") else "")


def results_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title_justify="left")
    for col in (*RESULT_COLUMNS, "source→target", "metrics"):
        table.add_column(col)
    for r in rows:
        names = KEY_METRICS.get(r["kind"], ())
        metrics = " ".join(f"{n}={r['metrics'][n]:.3f}" for n in names if n in r["metrics"])
        st = f"{r['source']}→{r['target']}" if r["kind"] == "transfer" else ""
        table.add_row(
            r["kind"],
            r["state"],
            r["dataset"] or "",
            r["model"] or "",
            r["defense"] or "",
            r["attack"] or "",
            _short_params(r["params"]),
            st,
            metrics,
        )
    return table


def results_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    names = sorted({n for r in rows for n in r["metrics"]})
    w = csv.writer(buf)
    w.writerow(["cell_key", *RESULT_COLUMNS, "source", "target", *names])
    for r in rows:
        w.writerow(
            [
                r["cell_key"],
                *(
                    json.dumps(r[c], sort_keys=True) if c == "params" else r[c]
                    for c in RESULT_COLUMNS
                ),
                r.get("source", ""),
                r.get("target", ""),
                *(r["metrics"].get(n, "") for n in names),
            ]
        )
    return buf.getvalue()


def results_markdown(rows: list[dict[str, Any]]) -> str:
    """The results table as GitHub-flavoured Markdown (key metrics per kind)."""
    head = (
        "| kind | state | dataset | model | defense | attack | params | source→target | metrics |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        names = KEY_METRICS.get(r["kind"], ())
        metrics = ", ".join(f"{n}={r['metrics'][n]:.3f}" for n in names if n in r["metrics"])
        st = f"{r['source']}→{r['target']}" if r["kind"] == "transfer" else ""
        cells = [
            r["kind"],
            r["state"],
            r["dataset"] or "",
            r["model"] or "",
            r["defense"] or "",
            r["attack"] or "",
            _short_params(r["params"]),
            st,
            metrics,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
