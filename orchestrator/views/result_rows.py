"""Result rows of ``advgrid results`` and their renderings (transfer matrices: tables.py)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from rich.table import Table

from orchestrator.views.transfer import latex_escape
from storage import CellRow


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
        # a training-time defense (adversarial training) is the train cell's defense
        out["defense"] = (spec["train"].get("defense") or {}).get("name")
    if cell.kind == "transfer":
        out["source"] = _model_label(spec["source"], spec.get("defense"))
        out["target"] = _model_label(spec["target"], spec.get("target_defense"))
    if cell.error:
        out["error"] = cell.error
    return out


def _fmt_num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


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


def results_latex(rows: list[dict[str, Any]]) -> str:
    """Attack rows as a booktabs table: clean and robust accuracy (%) per model and attack.

    Only attack cells have these numbers; train and transfer rows are left to the other
    formats (``advgrid transfer --format latex`` for the matrices).
    """
    lines = [
        r"\begin{tabular}{llllrr}",
        r"\toprule",
        r"dataset & model & defense & attack & clean (\%) & robust (\%) \\",
        r"\midrule",
    ]
    for r in rows:
        m = r["metrics"]
        if r["kind"] != "attack" or "robust_accuracy" not in m:
            continue
        attack = f"{r['attack']} {_short_params(r['params'])}".strip()
        names = [r["dataset"] or "", r["model"] or "", r["defense"] or "", attack]
        values = [f"{m['clean_accuracy'] * 100:.1f}", f"{m['robust_accuracy'] * 100:.1f}"]
        lines.append(" & ".join([*map(latex_escape, names), *values]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)
