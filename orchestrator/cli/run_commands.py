"""``advgrid run``, ``plan`` and ``status``: running a study and how far it is."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.options import (
    echo_table,
    err,
    open_db,
    out,
    print_transfer_tables,
    render_json,
    resolve_settings,
    storage_options,
    study_ref,
    user_errors,
)
from orchestrator.run.study_run import RunOptions, plan_only, run_study
from orchestrator.study import loader
from orchestrator.study.schema import Study
from orchestrator.views import live, render
from orchestrator.views.table import Column, TableView
from storage.enums import CellState


@click.command()
@click.argument("study_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@storage_options
@click.option(
    "--ray-address",
    envvar="RAY_ADDRESS",
    default="local",
    show_default=True,
    help="local (private cluster on this machine), auto (the cluster this machine "
    "belongs to) or ray://host:10001.",
)
@click.option(
    "--executor",
    type=click.Choice(["ray", "inline"]),
    default="ray",
    show_default=True,
    help="inline runs cells one by one in this process.",
)
@click.option(
    "--max-inflight",
    type=click.IntRange(min=1),
    default=None,
    help="Cells submitted at once [default: study's execution.max_inflight, "
    "else 2 × cluster CPUs].",
)
@click.option("--retry-failed", is_flag=True, help="Run quarantined cells again.")
@click.option("--dry-run", is_flag=True, help="Validate and plan; write nothing.")
@click.option("--no-mlflow", is_flag=True, help="Do not log to MLflow (the outbox keeps them).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no tables.")
def run(
    study_file: Path,
    db: str | None,
    store: str | None,
    mlflow_uri: str | None,
    ray_address: str,
    executor: str,
    max_inflight: int | None,
    retry_failed: bool,
    dry_run: bool,
    no_mlflow: bool,
    quiet: bool,
) -> None:
    """Run (or resume) the study in STUDY_FILE and print its transfer tables.

    Only cells not yet done are run; running the same command again after a crash picks up
    where it stopped. Exits 1 if cells failed or could not run.

    \b
    Examples:
      advgrid run examples/quickstart.yaml
      advgrid run study.yaml --executor inline --no-mlflow
      advgrid run study.yaml --db postgresql://lab@dbhost/advgrid --store /nfs/advgrid
      advgrid run study.yaml --ray-address auto --max-inflight 64
    """
    with user_errors():
        study = loader.load(study_file)
        settings = resolve_settings(db, store, mlflow_uri, study)
        if dry_run:
            _print_plan(plan_only(study, settings, existing=False))
            _print_notes(study)
            return
        if not quiet:
            _print_notes(study)
        opts = RunOptions(
            executor=executor,
            ray_address=ray_address,
            max_inflight=max_inflight,
            retry_failed=retry_failed,
            mlflow=not no_mlflow,
            quiet=quiet,
        )
        summary, _ = run_study(study, settings, opts, console=err)
    if not quiet:
        with user_errors():
            print_transfer_tables(settings.db_url, study.name)
    if not summary.ok:
        raise click.exceptions.Exit(1)


def _print_notes(study: Study) -> None:
    """What validation found worth saying but not wrong (a randomized defense attacked
    without EOT: its number is not adaptive), on stderr."""
    for note in study.notes:
        click.echo(f"note: {study.path}: {note}", err=True)


def _print_plan(rows: list[dict]) -> None:
    columns = [Column("kind"), *(Column(c, numeric=True) for c in ("planned", "done", "to run"))]
    cells = [[r["kind"], str(r["planned"]), str(r["done"]), str(r["to_run"])] for r in rows]
    view = TableView(columns=columns, rows=cells, title="cells by kind and state")
    echo_table(render.rich_table(view))


@click.command()
@click.argument("study_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@storage_options
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def plan(
    study_file: Path, db: str | None, store: str | None, mlflow_uri: str | None, fmt: str
) -> None:
    """Show the cells of STUDY_FILE by kind, and how many would run. Writes nothing.

    \b
    Examples:
      advgrid plan examples/quickstart.yaml
      advgrid plan study.yaml --format json
    """
    with user_errors():
        study = loader.load(study_file)
        rows = plan_only(study, resolve_settings(db, store, mlflow_uri, study), existing=True)
    if fmt == "json":
        notes = {"notes": study.notes} if study.notes else {}  # only when there is one
        render_json({"study": study.name, "cells": rows, **notes})
    else:
        _print_plan(rows)
        _print_notes(study)


@click.command()
@click.argument("study", required=False)
@storage_options
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def status(
    study: str | None, db: str | None, store: str | None, mlflow_uri: str | None, fmt: str
) -> None:
    """Progress of STUDY (a name or its file): cells by kind and state, the running cells
    with how far each is (epoch or batch, loss, samples/s, ETA: what the cell last said,
    under whichever driver it runs), and failures.

    Without STUDY, lists the studies in the database.

    \b
    Examples:
      advgrid status
      advgrid status quickstart --format json
    """
    with user_errors():
        name, loaded = study_ref(study) if study else (None, None)
        settings = resolve_settings(db, store, mlflow_uri, loaded)
        database = open_db(settings.db_url)
        if name is None:
            names = [s.name for s in database.list_studies()]
            render_json(names) if fmt == "json" else out.print("\n".join(names) or "no studies")
            return
        row = database.get_study(name)
        counts = database.counts(row.id)
        running = live.running(database, row.id, settings.store_root)
        failed = [
            c
            for state in (CellState.FAILED, CellState.QUARANTINED)
            for c in database.cells(row.id, state=state)
        ]
    if fmt == "json":
        render_json(
            {
                "study": name,
                "cells": counts,
                "failures": [
                    {
                        "cell_key": c.key,
                        "kind": c.kind,
                        "state": c.state,
                        "attempts": c.attempts,
                        "error": c.error,
                    }
                    for c in failed
                ],
                "running": running,
            }
        )
        return
    states = list(CellState)
    view = TableView(
        columns=[Column("kind"), *(Column(s, numeric=True) for s in states)],
        rows=[[k, *(str(n.get(s, 0)) for s in states)] for k, n in sorted(counts.items())],
        title=f"study {name}",
    )
    echo_table(render.rich_table(view))
    for r in running:
        out.print(f"[cyan]running[/] {live.describe(r)}")
    for c in failed:
        last = (c.error or "").strip().splitlines()
        out.print(
            f"[red]{c.state}[/] {c.kind} {c.key[:12]} after {c.attempts} attempt(s): "
            f"{last[-1] if last else ''}"
        )
