"""What the ``advgrid`` commands share: the storage options, resolving settings and the
study a command names, mapping errors to ``Error: …``, the attack filters, and printing a
result in every ``--format``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from orchestrator import config
from orchestrator.config import Settings
from orchestrator.errors import AdvgridError
from orchestrator.study import loader
from orchestrator.study.schema import Study
from orchestrator.views import render
from orchestrator.views import transfer as transfer_view
from orchestrator.views.table import TableView
from storage import Database, StorageError, mask_secrets
from storage.spec_json import AttackFilter
from tasks.errors import TaskError

TABLE_FORMATS = click.Choice(["table", "json", "csv", "markdown", "latex"])
PLOT_PATH = click.Path(dir_okay=False, writable=True, path_type=Path)
DEFAULT_DENOMINATOR = "source_success"


class _Out:
    """stdout console made per use: wide tables when piped, terminal width otherwise."""

    def print(self, *args: Any, **kwargs: Any) -> None:
        width = None if sys.stdout.isatty() else 200
        Console(soft_wrap=True, width=width).print(*args, **kwargs)


out = _Out()
err = Console(stderr=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Map every expected error to ``Error: …`` on stderr and exit status 1."""
    try:
        yield
    except (AdvgridError, StorageError, TaskError) as exc:
        raise click.ClickException(mask_secrets(str(exc))) from exc


def storage_options(fn: Callable) -> Callable:
    """Add ``--db``, ``--store`` and ``--mlflow-uri`` (each with its environment variable)."""
    fn = click.option(
        "--mlflow-uri",
        envvar=config.ENV_MLFLOW,
        default=None,
        help="MLflow tracking URI [env MLFLOW_TRACKING_URI; "
        "default: sqlite:///.advgrid/mlflow.db].",
    )(fn)
    fn = click.option(
        "--store",
        envvar=config.ENV_STORE,
        default=None,
        metavar="PATH|URL",
        help="Artifact store: a folder, or an fsspec URL such as s3://bucket/prefix "
        "[env ADVGRID_STORE; default: ./.advgrid].",
    )(fn)
    fn = click.option(
        "--db",
        envvar=config.ENV_DB,
        default=None,
        metavar="URL",
        help="SQL index URL, sqlite:///… or postgresql://… "
        "[env ADVGRID_DB; default: sqlite:///.advgrid/advgrid.db].",
    )(fn)
    return fn


def resolve_settings(
    db: str | None, store: str | None, mlflow_uri: str | None, study: Study | None = None
) -> config.Settings:
    """Where results go: flag, else environment, else the study's ``storage:``, else defaults."""
    return config.resolve(
        db=db,
        store=store,
        mlflow_uri=mlflow_uri,
        study_storage=study.file.storage if study else None,
    )


def study_ref(ref: str) -> tuple[str, Study | None]:
    """A study given by file (validated) or by name."""
    if ref.endswith((".yaml", ".yml")) or Path(ref).is_file():
        study = loader.load(ref)
        return study.name, study
    return ref, None


def render_json(value: Any) -> None:
    """Print ``value`` as ``--format json`` does."""
    click.echo(render.json_text(value))


def echo_table(table: Table) -> None:
    """Print a rich table on stdout."""
    out.print(table)


def open_db(url: str) -> Database:
    """The index at ``url`` (its schema created when empty; an old one is an error)."""
    return Database.open(url)


@dataclass(frozen=True)
class Renderings:
    """What one command prints in each ``--format``; each is called only if chosen.

    Attributes:
        json: The value ``--format json`` prints.
        csv: The rows ``--format csv`` prints.
        tables: The tables the terminal, Markdown and LaTeX print (one after another).
        latex: Tables LaTeX prints instead of ``tables``, where they differ.
    """

    json: Callable[[], Any]
    csv: Callable[[], TableView]
    tables: Callable[[], list[TableView]]
    latex: Callable[[], list[TableView]] | None = None


def emit(fmt: str, r: Renderings) -> None:
    """Print ``r`` in format ``fmt`` (table, json, csv, markdown or latex) on stdout."""
    if fmt == "json":
        render_json(r.json())
    elif fmt == "csv":
        click.echo(render.csv_text(r.csv()), nl=False)
    elif fmt == "markdown":
        click.echo("\n\n".join(render.markdown(t) for t in r.tables()))
    elif fmt == "latex":
        click.echo("\n\n".join(render.latex(t) for t in (r.latex or r.tables)()))
    else:
        for table in r.tables():
            echo_table(render.rich_table(table))


def print_transfer_tables(db_url: str, study: str) -> None:
    """The terminal transfer tables of ``study`` (printed at the end of ``advgrid run``)."""
    database = open_db(db_url)
    counts = database.transfer_counts(database.get_study(study).id)
    for m in transfer_view.matrices(counts, DEFAULT_DENOMINATOR):
        echo_table(render.rich_table(transfer_view.table(m)))


def attack_filter(attack: str | None, eps: str | None, params: tuple[str, ...]) -> AttackFilter:
    """The ``--attack``, ``--eps`` and ``--param`` filters as the index takes them."""
    return AttackFilter(attack, _parse_eps(eps), tuple(_parse_param(p) for p in params))


def _parse_eps(eps: str | None) -> float | None:
    if eps is None:
        return None
    from tasks.params import parse_number

    try:
        return float(parse_number(eps))  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--eps") from exc


def _parse_param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"expected KEY=VALUE, got {text!r}", param_hint="--param")
    return key.strip(), value.strip()


def open_study(
    study: str, db: str | None, store: str | None, mlflow_uri: str | None
) -> tuple[str, Database, int, Settings]:
    """The study's name, its database, its id there, and the resolved settings."""
    name, loaded = study_ref(study)
    settings = resolve_settings(db, store, mlflow_uri, loaded)
    database: Database = open_db(settings.db_url)
    return name, database, database.get_study(name).id, settings


def filter_options(fn: click.decorators.FC) -> click.decorators.FC:
    """Add ``--attack``, ``--eps`` and ``--param`` (read by :func:`attack_filter`)."""
    fn = click.option(
        "--param",
        "params",
        multiple=True,
        metavar="KEY=VALUE",
        help="Further attack-parameter filter, e.g. --param steps=40 (repeatable).",
    )(fn)
    fn = click.option("--eps", default=None, help="Attack budget, e.g. 0.1 or 8/255.")(fn)
    return click.option("--attack", default=None, help="Attack name (e.g. pgd).")(fn)
