"""Heatmaps of transfer matrices and robustness-curve plots (matplotlib, no display needed).

Figures are made with :class:`matplotlib.figure.Figure` directly, not pyplot: no global
state, no GUI backend, safe in a process that draws several at once.
"""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure

from orchestrator.errors import AdvgridError
from orchestrator.views.curves import Curve
from orchestrator.views.transfer import Matrix

FORMATS = (".png", ".svg", ".pdf")


def heatmap(m: Matrix) -> Figure:
    """Rates in % as a heatmap: sources down, targets across, each cell annotated."""
    rows, cols = len(m.sources), len(m.targets)
    fig = Figure(figsize=(max(4.0, 1.0 + 0.75 * cols), max(3.0, 1.2 + 0.5 * rows)), dpi=120)
    ax = fig.add_subplot()
    values = [[float("nan") if r is None else r * 100 for r in row] for row in m.rates]
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(cols), m.targets, rotation=35, ha="right")
    ax.set_yticks(range(rows), m.sources)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if v == v:  # not NaN
                ax.text(
                    j,
                    i,
                    f"{v:.0f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if v > 60 else "white",
                )
    fig.colorbar(image, ax=ax, label=f"transfer rate % ({m.denominator})")
    ax.set_title(m.title(), fontsize=10)
    fig.tight_layout()
    return fig


def curve_figures(curves: list[Curve]) -> list[Figure]:
    """One figure per dataset and attack: a line per model (+ defense) and configuration,
    with a ± std band where points were repeated over seeds."""
    groups: dict[tuple[str, str], list[Curve]] = defaultdict(list)
    for c in curves:
        groups[(c.dataset, c.attack)].append(c)
    figs = []
    for (dataset, attack), members in groups.items():
        fig = Figure(figsize=(6.0, 4.0), dpi=120)
        ax = fig.add_subplot()
        for c in members:
            xs = [p.x for p in c.points]
            means = [p.mean * 100 for p in c.points]
            (line,) = ax.plot(xs, means, marker="o", markersize=3, label=c.label)
            if any(p.std is not None for p in c.points):
                std = [(p.std or 0.0) * 100 for p in c.points]
                low = [m - s for m, s in zip(means, std, strict=True)]
                high = [m + s for m, s in zip(means, std, strict=True)]
                ax.fill_between(xs, low, high, alpha=0.2, color=line.get_color())
        ax.set_xlabel(members[0].x_axis)
        ax.set_ylabel("robust accuracy %")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.set_title(f"{attack} on {dataset}", fontsize=10)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        figs.append(fig)
    return figs


def save_all(figs: list[Figure], path: Path) -> list[Path]:
    """Write ``figs`` to ``path``, ``path-2``, ``path-3``…; returns the paths written."""
    if path.suffix.lower() not in FORMATS:
        raise AdvgridError(
            f"--plot {path}: unknown image type {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(FORMATS)}"
        )
    if not path.parent.is_dir():
        raise AdvgridError(f"--plot {path}: no such folder {path.parent}")
    written = []
    for i, fig in enumerate(figs):
        target = path if i == 0 else path.with_name(f"{path.stem}-{i + 1}{path.suffix}")
        fig.savefig(target)
        written.append(target)
    return written


def svg_text(fig: Figure) -> str:
    """The figure as inline SVG markup (for a self-contained HTML page)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg") :]


def png_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
