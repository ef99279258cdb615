"""``advgrid attempts``: every attempt of a study's cells, and what each said of its run."""

from __future__ import annotations

import click

from orchestrator.cli.options import (
    echo_table,
    open_db,
    out,
    render_json,
    resolve_settings,
    storage_options,
    study_ref,
    user_errors,
)
from orchestrator.views import render
from orchestrator.views.table import Column, TableView


@click.command()
@click.argument("study")
@click.argument("cell", required=False)
@storage_options
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def attempts(
    study: str,
    cell: str | None,
    db: str | None,
    store: str | None,
    mlflow_uri: str | None,
    fmt: str,
) -> None:
    """Every attempt of STUDY's cells that took more than one, or of the cell whose key starts
    with CELL: how each ended, where it ran, and what it said (its error, or a train cell's
    resume from its saved state: "resumed at epoch 2 of 4 …").

    \b
    Examples:
      advgrid attempts quickstart
      advgrid attempts quickstart 3fa9c2 --format json
    """
    with user_errors():
        name, loaded = study_ref(study)
        database = open_db(resolve_settings(db, store, mlflow_uri, loaded).db_url)
        row = database.get_study(name)
        cells = database.cells(row.id)
        if cell is not None:
            cells = [c for c in cells if c.key.startswith(cell)]
            if not cells:
                raise click.UsageError(f"no cell of study {name!r} has a key starting {cell!r}")
        found = [(c, a) for c in cells for a in database.attempts(c.id)]
        if cell is None:  # the cells worth a look: retried, or with something to say
            found = [(c, a) for c, a in found if c.attempts > 1 or a.note]
    if fmt == "json":
        render_json(
            [
                {
                    "cell_key": c.key,
                    "kind": c.kind,
                    "n": a.n,
                    "outcome": a.outcome,
                    "worker": a.worker,
                    "started_at": a.started_at.isoformat(),
                    "ended_at": a.ended_at.isoformat() if a.ended_at else None,
                    "error": a.error,
                    "note": a.note,
                }
                for c, a in found
            ]
        )
        return
    if not found:
        out.print(
            f"no cell of study {name!r} was retried or said anything of its run; "
            f"`advgrid attempts {name} KEY` shows any one cell's attempts"
        )
        return
    view = TableView(
        columns=[
            Column("cell"),
            Column("kind"),
            Column("n", numeric=True),
            Column("outcome"),
            Column("worker"),
            Column("started"),
            Column("said"),
        ],
        rows=[
            [
                c.key[:12],
                c.kind,
                str(a.n),
                a.outcome or "running",
                a.worker or "",
                a.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                _said(a.error, a.note),
            ]
            for c, a in found
        ],
        title=f"attempts of study {name}" + (f", cells {cell}…" if cell else ""),
    )
    echo_table(render.rich_table(view))


def _said(error: str | None, note: str | None) -> str:
    """The attempt's note, or the last line of its error."""
    if note:
        return note
    lines = (error or "").strip().splitlines()
    return lines[-1] if lines else ""
