"""One table, whatever it is printed as: a :class:`TableView` holds the title, the columns, the
rows and the notes, and :mod:`orchestrator.views.render` prints it for the terminal (rich),
as Markdown, as LaTeX (booktabs) or as CSV.

A cell is text, None (no value: ``—``, ``--`` in LaTeX), or one of the small types below for
what the formats write differently. Tables that CSV writes one row per entry (a matrix's
entries, a curve's points) are a :class:`TableView` of their own, with plain values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Interval:
    """A rate in % with its 95 % interval and its count: ``25.0 [14.2, 40.2]``.

    The terminal adds the unit and the count, dimmed: ``25.0% [14.2, 40.2] n=40``.
    """

    rate: str
    low: str
    high: str
    n: int


@dataclass(frozen=True)
class Faint:
    """Text dimmed on the terminal (``n=0``: an entry that counted nothing), plain elsewhere."""

    text: str


@dataclass(frozen=True)
class Items:
    """Short items in one cell: space-separated on the terminal, where width is scarce, and
    comma-separated in documents."""

    items: tuple[str, ...]


Cell = str | int | float | Interval | Faint | Items | None


@dataclass(frozen=True)
class Column:
    """One column: its heading, whether it holds numbers (right-aligned), a terminal style,
    and the heading in LaTeX when it needs markup there (``source $\\backslash$ target``)."""

    head: str
    numeric: bool = False
    style: str | None = None
    latex_head: str | None = None


@dataclass(frozen=True)
class TableView:
    """A table ready to print in any format.

    Attributes:
        columns: The columns, in order.
        rows: One sequence of cells per row, one cell per column.
        title: The terminal's title above the table.
        caption: The terminal's dimmed line under the table.
        heading: The document caption: Markdown's bold first line and, in a floating
            ``table``, LaTeX's ``\\caption``; a table without one is a bare ``tabular``.
        latex_caption: LaTeX's caption when it says more than ``heading``.
        notes: Lines under the table in Markdown, after a blank line.
    """

    columns: Sequence[Column]
    rows: Sequence[Sequence[Cell]]
    title: str | None = None
    caption: str | None = None
    heading: str | None = None
    latex_caption: str | None = None
    notes: Sequence[str] = field(default_factory=tuple)
