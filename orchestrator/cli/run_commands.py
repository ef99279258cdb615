"""The ``advgrid`` subcommands (registered on :data:`orchestrator.cli.main`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from orchestrator.cli import (
    _settings,
    _study_ref,
    echo_table,
    err,
    main,
    open_db,
    out,
    render_json,
    storage_options,
    user_errors,
)
from orchestrator.cli.view_commands import Renderings, emit
from orchestrator.run.study_run import RunOptions, plan_only, run_study
from orchestrator.study import loader as specmod
from orchestrator.views import result_rows
from tasks.attacks import ATTACKS
from tasks.datasets import DATASETS
from tasks.defenses import DEFENSES
from tasks.models import MODELS
from tasks.train_defenses import TRAINING_DEFENSES

FORMATS = click.Choice(["table", "json", "csv", "markdown"])
TABLE_FORMATS = click.Choice(["table", "json", "csv", "markdown", "latex"])
REGISTRIES = {"attacks": ATTACKS, "defenses": DEFENSES, "models": MODELS, "datasets": DATASETS}


@main.command()
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
        study = specmod.load(study_file)
        settings = _settings(db, store, mlflow_uri, study)
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
        from orchestrator.cli.view_commands import print_transfer_tables

        with user_errors():
            print_transfer_tables(settings.db_url, study.name)
    if not summary.ok:
        raise click.exceptions.Exit(1)


def _print_notes(study: specmod.Study) -> None:
    """What validation found worth saying but not wrong (a randomized defense attacked
    without EOT: its number is not adaptive), on stderr."""
    for note in study.notes:
        click.echo(f"note: {study.path}: {note}", err=True)


def _print_plan(rows: list[dict]) -> None:
    table = Table(title="cells by kind and state", title_justify="left")
    for col in ("kind", "planned", "done", "to run"):
        table.add_column(col, justify="right" if col != "kind" else "left")
    for r in rows:
        table.add_row(r["kind"], str(r["planned"]), str(r["done"]), str(r["to_run"]))
    echo_table(table)


@main.command()
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
        study = specmod.load(study_file)
        rows = plan_only(study, _settings(db, store, mlflow_uri, study), existing=True)
    if fmt == "json":
        notes = {"notes": study.notes} if study.notes else {}  # only when there is one
        render_json({"study": study.name, "cells": rows, **notes})
    else:
        _print_plan(rows)
        _print_notes(study)


@main.command()
@click.argument("study", required=False)
@storage_options
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def status(
    study: str | None, db: str | None, store: str | None, mlflow_uri: str | None, fmt: str
) -> None:
    """Progress of STUDY (a name or its file): cells by kind and state, and failures.

    Without STUDY, lists the studies in the database.

    \b
    Examples:
      advgrid status
      advgrid status quickstart --format json
    """
    with user_errors():
        name, loaded = _study_ref(study) if study else (None, None)
        database = open_db(_settings(db, store, mlflow_uri, loaded).db_url)
        if name is None:
            names = [s.name for s in database.list_studies()]
            render_json(names) if fmt == "json" else out.print("\n".join(names) or "no studies")
            return
        row = database.get_study(name)
        counts = database.counts(row.id)
        failed = [
            c for state in ("failed", "quarantined") for c in database.cells(row.id, state=state)
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
            }
        )
        return
    table = Table(title=f"study {name}", title_justify="left")
    states = ["pending", "running", "done", "failed", "quarantined"]
    table.add_column("kind")
    for s in states:
        table.add_column(s, justify="right")
    for kind, by_state in sorted(counts.items()):
        table.add_row(kind, *(str(by_state.get(s, 0)) for s in states))
    echo_table(table)
    for c in failed:
        last = (c.error or "").strip().splitlines()
        out.print(
            f"[red]{c.state}[/] {c.kind} {c.key[:12]} after {c.attempts} attempt(s): "
            f"{last[-1] if last else ''}"
        )


@main.command()
@click.argument("study")
@storage_options
@click.option("--format", "fmt", type=TABLE_FORMATS, default="table", show_default=True)
@click.option(
    "--kind",
    type=click.Choice(["train", "attack", "transfer"]),
    default=None,
    help="Only cells of this kind.",
)
def results(
    study: str,
    db: str | None,
    store: str | None,
    mlflow_uri: str | None,
    fmt: str,
    kind: str | None,
) -> None:
    """Every cell of STUDY (a name or its file) with its parameters and metrics.

    JSON rows hold cell_key, kind, state, dataset, model (train: the model; attack: the
    source; transfer: the target), defense, attack, params, metrics and, for transfer rows,
    source and target.

    \b
    Examples:
      advgrid results quickstart
      advgrid results quickstart --kind attack --format csv > attacks.csv
      advgrid results quickstart --kind attack --format latex > robust.tex
    """
    with user_errors():
        name, loaded = _study_ref(study)
        database = open_db(_settings(db, store, mlflow_uri, loaded).db_url)
        rows = [result_rows.row(c) for c in database.cells(database.get_study(name).id, kind=kind)]
    emit(
        fmt,
        Renderings(
            json=lambda: rows,
            csv=lambda: result_rows.records(rows),
            tables=lambda: [result_rows.table(rows)],
            latex=lambda: [result_rows.accuracy_table(rows)],
        ),
    )


@main.command(name="list")
@click.argument("kind", type=click.Choice(sorted(REGISTRIES)))
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def list_(kind: str, fmt: str) -> None:
    """The registered components of KIND with a one-line summary and their parameters.

    Defenses come in two stages: `inference` defenses wrap a model (the study's
    `defenses:` axis); `training` defenses train one (a recipe's `train: {defense: ...}`).

    \b
    Examples:
      advgrid list attacks
      advgrid list defenses
      advgrid list datasets --format json
    """
    entries = _listed(kind)
    if fmt == "json":
        render_json(
            [
                {
                    "name": e.name,
                    **({"stage": stage} if stage else {}),
                    "summary": e.summary,
                    "params": json.loads(json.dumps(e.params.model_json_schema())),
                }
                for e, stage in entries
            ]
        )
        return
    table = Table(title_justify="left")
    staged = kind == "defenses"
    for col in ("name", *(["stage"] if staged else []), "summary", "params (defaults)"):
        table.add_column(col)
    for e, stage in entries:
        fields = ", ".join(f"{n}={_default(f)}" for n, f in e.params.model_fields.items())
        table.add_row(e.name, *([stage] if staged else []), escape(e.summary), escape(fields))
    echo_table(table)


def _listed(kind: str) -> list[tuple[Any, str]]:
    """The entries ``advgrid list KIND`` shows, each with its stage (defenses only)."""
    if kind == "defenses":
        return [(e, "inference") for e in DEFENSES] + [(e, "training") for e in TRAINING_DEFENSES]
    return [(e, "") for e in REGISTRIES[kind]]


def _default(field: Any) -> str:
    """A parameter's default as a study file would write it (``8/255`` stays readable)."""
    if field.is_required():
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, float):
        if 0 < value < 1 and abs(value * 255 - round(value * 255)) < 1e-9:
            return f"{round(value * 255)}/255"
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return repr(value)


@main.group()
def db() -> None:
    """The SQL index: schema migrations and facts."""


@db.command()
@storage_options
def upgrade(db: str | None, store: str | None, mlflow_uri: str | None) -> None:
    """Migrate the database to the schema this advgrid needs.

    \b
    Examples:
      advgrid db upgrade
      advgrid db upgrade --db postgresql://lab@dbhost/advgrid
    """
    from storage import Database

    with user_errors():
        database = Database(_settings(db, store, mlflow_uri).db_url)
        before, after = database.upgrade()
    out.print(f"database at revision {after} (was {before or 'empty'})")


@db.command()
@storage_options
def info(db: str | None, store: str | None, mlflow_uri: str | None) -> None:
    """Where the database is, its schema revision and row counts (password masked).

    \b
    Examples:
      advgrid db info
    """
    from storage import Database

    with user_errors():
        render_json(Database(_settings(db, store, mlflow_uri).db_url).info())


@main.group()
def artifacts() -> None:
    """The content-addressed artifact store."""


@artifacts.command()
@storage_options
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def verify(db: str | None, store: str | None, mlflow_uri: str | None, fmt: str) -> None:
    """Re-hash every stored artifact and check every indexed one is there.

    Reports files whose bytes no longer hash to their name and artifacts the index lists
    that are missing from the store; exits 1 when there is any. Files the index does not
    know are not problems here (they are what a crashed write leaves behind).

    \b
    Examples:
      advgrid artifacts verify
      advgrid artifacts verify --store /shared/advgrid --format json
      advgrid artifacts verify --store s3://lab-bucket/advgrid
    """
    from storage import ArtifactStore

    with user_errors():
        settings = _settings(db, store, mlflow_uri)
        database = open_db(settings.db_url)
        store_ = ArtifactStore(settings.store_root)
        indexed = database.artifact_digests()
        problems = dict(store_.verify())
        for digest in indexed:
            if digest not in problems and not store_.exists(digest):
                problems[digest] = f"indexed but missing from the store ({store_.location(digest)})"
    rows = [{"digest": d, "problem": p} for d, p in sorted(problems.items())]
    if fmt == "json":
        render_json({"indexed": len(indexed), "problems": rows})
    elif rows:
        table = Table(title=f"{len(rows)} of the artifacts failed verification")
        table.add_column("digest")
        table.add_column("problem")
        for r in rows:
            table.add_row(r["digest"], escape(r["problem"]))
        echo_table(table)
    else:
        out.print(f"{len(indexed)} indexed artifacts present; every stored file hashes to its name")
    if rows:
        click.get_current_context().exit(1)


@artifacts.command()
@storage_options
@click.option("--delete", is_flag=True, help="Delete the orphans (default: only list them).")
@click.option(
    "--min-age",
    type=click.FloatRange(min=0),
    default=3600,
    show_default=True,
    metavar="SECONDS",
    help="Leave files younger than this: a running cell writes its file before its row.",
)
def gc(
    db: str | None, store: str | None, mlflow_uri: str | None, delete: bool, min_age: float
) -> None:
    """List (or with --delete remove) stored files no index row points at.

    Only orphans are touched: a file the index lists is never removed. Run it without
    --delete first and read the list.

    \b
    Examples:
      advgrid artifacts gc                 # dry run: what would go
      advgrid artifacts gc --delete
      advgrid artifacts gc --store s3://lab-bucket/advgrid
    """
    from storage import ArtifactStore

    with user_errors():
        settings = _settings(db, store, mlflow_uri)
        indexed = set(open_db(settings.db_url).artifact_digests())
        store_ = ArtifactStore(settings.store_root)
        orphans, young = [], 0
        for digest in store_.iter_digests():
            if digest in indexed:
                continue
            age = store_.age_s(digest)
            if age is None:
                continue
            if age < min_age:
                young += 1
                continue
            orphans.append(digest)
        size = sum(store_.size(d) or 0 for d in orphans)
        for digest in orphans:
            out.print(f"{'deleted' if delete else 'orphan'} {digest}")
            if delete:
                store_.remove(digest)
    verb = "deleted" if delete else "would delete (dry run; add --delete)"
    out.print(
        f"{len(orphans)} orphaned files, {size / 1e6:.1f} MB: {verb}; "
        f"{young} younger than {min_age:g} s left alone"
    )


__all__ = ["err"]
