"""Transfer matrices built from the counts the index returns, with Wilson intervals, and their
renderings: terminal (rich), CSV, JSON, Markdown and LaTeX (booktabs)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from storage.tables import TransferCount

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


def model_label(model: str, defense: tuple[str, str]) -> str:
    """``model`` or ``model+defense label`` for a defended model."""
    name, label = defense
    return model if name == "none" else f"{model}+{label}"


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


def attack_title(attack: str, params: dict[str, Any]) -> str:
    """``pgd(norm=linf, eps=0.03137, steps=10)``: the parameters a reader tells apart."""
    shown = {
        k: v
        for k, v in params.items()
        if k in ("norm", "eps", "steps", "max_queries")
        or (k == "targeted" and v)
        or (k == "restarts" and v != 1)
        or (k == "seed" and v != 0)
    }
    if not shown:
        return attack
    return f"{attack}({', '.join(f'{k}={fmt_num(v)}' for k, v in shown.items())})"


def fmt_num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


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


def rich_table(m: Matrix) -> Table:
    table = Table(
        title=f"{m.title()} — transfer rate, denominator: {m.denominator}",
        title_justify="left",
        caption="[dim]rate % \\[Wilson 95 % interval] (n counted)[/]",
        caption_justify="left",
    )
    table.add_column("source \\ target", style="bold")
    for t in m.targets:
        table.add_column(t, justify="right")
    for s, row in zip(m.sources, m.entries, strict=True):
        cells = []
        for e in row:
            if e is None or e.ci is None:
                cells.append("—" if e is None else "[dim]n=0[/]")
                continue
            lo, hi = e.ci
            cells.append(f"{_pct(e.rate or 0.0)}% [dim]\\[{_pct(lo)}, {_pct(hi)}] n={e.n}[/]")
        table.add_row(s, *cells)
    return table


def to_csv(ms: list[Matrix]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["dataset", "attack", "params", "denominator", "source", "target", "rate", "n"]
        + ["fooled", "ci95_low", "ci95_high", "cell_key"]
    )
    for m in ms:
        for s, row in zip(m.sources, m.entries, strict=True):
            for t, e in zip(m.targets, row, strict=True):
                head = [m.dataset, m.attack, json.dumps(m.params, sort_keys=True), m.denominator]
                if e is None:
                    w.writerow([*head, s, t, "", "", "", "", "", ""])
                    continue
                lo, hi = e.ci or (math.nan, math.nan)
                rate = "" if e.rate is None else f"{e.rate:.6f}"
                ci = ["", ""] if e.ci is None else [f"{lo:.6f}", f"{hi:.6f}"]
                w.writerow([*head, s, t, rate, e.n, e.fooled, *ci, e.cell_key])
    return buf.getvalue()


def _cell_text(e: Entry | None, ci: str) -> str:
    if e is None:
        return "—"
    if e.ci is None:
        return "n=0"
    lo, hi = e.ci
    return f"{_pct(e.rate or 0.0)}{ci.format(lo=_pct(lo), hi=_pct(hi))}"


def to_markdown(m: Matrix) -> str:
    head = "| source \\ target | " + " | ".join(m.targets) + " |"
    sep = "|---|" + "---:|" * len(m.targets)
    lines = [f"**{m.caption()}**", "", head, sep]
    for s, row in zip(m.sources, m.entries, strict=True):
        vals = [_cell_text(e, " [{lo}, {hi}]") for e in row]
        lines.append(f"| {s} | " + " | ".join(vals) + " |")
    ns = sorted({e.n for row in m.entries for e in row if e})
    if ns:
        lines += ["", f"n per entry: {ns[0]}–{ns[-1]}" if len(ns) > 1 else f"n per entry: {ns[0]}"]
    return "\n".join(lines)


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


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(m: Matrix) -> str:
    """A booktabs table (``\\usepackage{booktabs}``): rates in %, intervals in small type."""
    cols = "l" + "r" * len(m.targets)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + latex_escape(m.caption()) + "}",
        r"\begin{tabular}{" + cols + "}",
        r"\toprule",
        "source $\\backslash$ target & " + " & ".join(latex_escape(t) for t in m.targets) + r" \\",
        r"\midrule",
    ]
    for s, row in zip(m.sources, m.entries, strict=True):
        vals = [_cell_text(e, r" {{\scriptsize [{lo}, {hi}]}}").replace("—", "--") for e in row]
        lines.append(latex_escape(s) + " & " + " & ".join(vals) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)
