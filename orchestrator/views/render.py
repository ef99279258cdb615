"""Every format a :class:`~orchestrator.views.table.TableView` prints as, in one place: the
terminal (a rich table), Markdown (GitHub-flavoured), LaTeX (booktabs:
``\\usepackage{booktabs}``), CSV, and the JSON the commands print.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from rich.table import Table

from orchestrator.views.table import Cell, Faint, Interval, Items, TableView

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
MISSING = "—"  # a cell without a value


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def rich_table(view: TableView) -> Table:
    """The terminal's table (rich markup in titles and cells is interpreted)."""
    table = Table(
        title=view.title,
        title_justify="left",
        caption=f"[dim]{view.caption}[/]" if view.caption else None,
        caption_justify="left",
    )
    for c in view.columns:
        table.add_column(c.head, justify="right" if c.numeric else "left", style=c.style)
    for row in view.rows:
        table.add_row(*(_rich_cell(cell) for cell in row))
    return table


def _rich_cell(cell: Cell) -> str:
    if isinstance(cell, Interval):
        return f"{cell.rate}% [dim]\\[{cell.low}, {cell.high}] n={cell.n}[/]"
    if isinstance(cell, Faint):
        return f"[dim]{cell.text}[/]"
    if isinstance(cell, Items):
        return " ".join(cell.items)
    return MISSING if cell is None else str(cell)


def markdown(view: TableView) -> str:
    """A GitHub-flavoured Markdown table, its heading in bold above it and its notes below."""
    lines = [f"**{view.heading}**", ""] if view.heading else []
    lines.append("| " + " | ".join(c.head for c in view.columns) + " |")
    lines.append("|" + "".join("---:|" if c.numeric else "---|" for c in view.columns))
    lines += ["| " + " | ".join(_markdown_cell(cell) for cell in row) + " |" for row in view.rows]
    if view.notes:
        lines += ["", *view.notes]
    return "\n".join(lines)


def _markdown_cell(cell: Cell) -> str:
    if isinstance(cell, Interval):
        return f"{cell.rate} [{cell.low}, {cell.high}]"
    if isinstance(cell, Faint):
        return cell.text
    if isinstance(cell, Items):
        return ", ".join(cell.items)
    return MISSING if cell is None else str(cell)


def latex(view: TableView) -> str:
    """A booktabs ``tabular``; inside a floating ``table`` with a caption when the view has
    a heading. Text is escaped; ``—`` is written ``--`` and ``±`` ``$\\pm$``."""
    caption = view.latex_caption or view.heading
    lines = []
    if caption:
        lines += [r"\begin{table}[t]", r"\centering", r"\caption{" + _latex_text(caption) + "}"]
    lines += [
        r"\begin{tabular}{" + "".join("r" if c.numeric else "l" for c in view.columns) + "}",
        r"\toprule",
        " & ".join(c.latex_head or _latex_text(c.head) for c in view.columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(_latex_cell(cell) for cell in row) + r" \\" for row in view.rows]
    lines += [r"\bottomrule", r"\end{tabular}", *([r"\end{table}"] if caption else [])]
    return "\n".join(lines)


def _latex_cell(cell: Cell) -> str:
    if isinstance(cell, Interval):
        return f"{cell.rate} {{\\scriptsize [{cell.low}, {cell.high}]}}"
    if isinstance(cell, Faint):
        return _latex_text(cell.text)
    if isinstance(cell, Items):
        return _latex_text(", ".join(cell.items))
    return _latex_text(MISSING if cell is None else str(cell))


def _latex_text(text: str) -> str:
    return latex_escape(text).replace("—", "--").replace("±", r"$\pm$")


def csv_text(view: TableView) -> str:
    """The view as CSV: the column heads, then each row's values as they are."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([c.head for c in view.columns])
    w.writerows(view.rows)
    return buf.getvalue()


def json_text(value: Any) -> str:
    """What ``--format json`` prints (indented, keys in their order)."""
    return json.dumps(value, indent=2, sort_keys=False, default=str)
