"""``advgrid db`` and ``advgrid artifacts``: the SQL index's schema and facts, and the
content-addressed artifact store's checks and clean-up."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from orchestrator.cli.options import (
    TABLE_FORMATS,
    Renderings,
    echo_table,
    emit,
    open_db,
    out,
    render_json,
    resolve_settings,
    storage_options,
    user_errors,
)
from orchestrator.views import artifact_list
from storage.enums import CellState


@click.group()
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
        database = Database(resolve_settings(db, store, mlflow_uri).db_url)
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
        render_json(Database(resolve_settings(db, store, mlflow_uri).db_url).info())


@click.group()
def artifacts() -> None:
    """The content-addressed artifact store."""


@artifacts.command(name="ls")
@storage_options
@click.option(
    "--study", "study_name", default=None, help="Only the artifacts this study's cells wrote."
)
@click.option(
    "--kind", default=None, help="Only artifacts of this kind (checkpoint, adversarial…)."
)
@click.option("--format", "fmt", type=TABLE_FORMATS, default="table", show_default=True)
def ls(
    db: str | None,
    store: str | None,
    mlflow_uri: str | None,
    study_name: str | None,
    kind: str | None,
    fmt: str,
) -> None:
    """List the indexed artifacts, oldest first: digest, kind, size and what made them.

    \b
    Examples:
      advgrid artifacts ls
      advgrid artifacts ls --study quickstart --kind checkpoint
      advgrid artifacts ls --format json
    """
    with user_errors():
        records = open_db(resolve_settings(db, store, mlflow_uri).db_url).artifacts(
            study=study_name, kind=kind
        )
    view = artifact_list.table(records)
    emit(fmt, Renderings(lambda: artifact_list.rows(records), lambda: view, lambda: [view]))


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
        settings = resolve_settings(db, store, mlflow_uri)
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

    Only orphans are touched: a file the index lists is never removed, nor the saved state
    of a cell that is not done (a train cell's next attempt continues from it). The saved
    state of a done cell, or of a cell no study has, is stale and goes too. Run it without
    --delete first and read the list.

    \b
    Examples:
      advgrid artifacts gc                 # dry run: what would go
      advgrid artifacts gc --delete
      advgrid artifacts gc --store s3://lab-bucket/advgrid
    """
    from storage import ArtifactStore
    from storage.artifacts import partial_files

    with user_errors():
        settings = resolve_settings(db, store, mlflow_uri)
        database = open_db(settings.db_url)
        indexed = set(database.artifact_digests())
        store_ = ArtifactStore(settings.store_root)
        partials = list(store_.iter_partials())
        states = database.states_of(key for key, _ in partials)
        stale = []
        for key, pointer in partials:
            if pointer is not None:  # kept (an unfinished cell's) or listed as stale: no orphan
                indexed.update(partial_files(pointer))
            if pointer is None or not states.get(key, set()) - {CellState.DONE}:
                stale.append((key, pointer))
        for key, pointer in stale:
            epoch = "" if pointer is None else f" after epoch {pointer.get('epoch')}"
            out.print(f"{'deleted' if delete else 'stale'} state{epoch} of cell {key}")
            if delete:
                store_.drop_partial(key)
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
        f"{len(orphans)} orphaned files, {size / 1e6:.1f} MB, and {len(stale)} stale saved "
        f"states: {verb}; {young} younger than {min_age:g} s left alone"
    )
