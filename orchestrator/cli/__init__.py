"""``advgrid`` command line: thin commands that parse, call one function and render."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from orchestrator import config
from orchestrator.errors import AdvgridError
from orchestrator.study import loader as specmod
from storage import Database, StorageError, mask_secrets
from tasks.errors import TaskError


class _Out:
    """stdout console made per use: wide tables when piped, terminal width otherwise."""

    def print(self, *args: Any, **kwargs: Any) -> None:
        width = None if sys.stdout.isatty() else 200
        Console(soft_wrap=True, width=width).print(*args, **kwargs)


out = _Out()
err = Console(stderr=True)


class MaskingFormatter(logging.Formatter):
    """Masks every URL password in a log line, its traceback included."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


@contextmanager
def user_errors() -> Iterator[None]:
    """Map every expected error to ``Error: …`` on stderr and exit status 1."""
    try:
        yield
    except (AdvgridError, StorageError, TaskError) as exc:
        raise click.ClickException(mask_secrets(str(exc))) from exc


def storage_options(fn: Callable) -> Callable:
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


def _settings(
    db: str | None, store: str | None, mlflow_uri: str | None, study: specmod.Study | None = None
) -> config.Settings:
    return config.resolve(
        db=db,
        store=store,
        mlflow_uri=mlflow_uri,
        study_storage=study.file.storage if study else None,
    )


def _study_ref(ref: str) -> tuple[str, specmod.Study | None]:
    """A study given by file (validated) or by name."""
    if ref.endswith((".yaml", ".yml")) or Path(ref).is_file():
        study = specmod.load(ref)
        return study.name, study
    return ref, None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option("0.1.0", prog_name="advgrid")
def main(verbose: int) -> None:
    """Adversarial-robustness studies as resumable grids.

    A study file names datasets, models, defenses and attacks; advgrid trains the models,
    attacks every source, evaluates every adversarial set on every target, records each cell
    in a SQL index and MLflow, and resumes where it stopped when run again.

    \b
    Examples:
      advgrid run examples/quickstart.yaml
      advgrid status quickstart
      advgrid transfer quickstart --attack pgd --eps 0.1
    """
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    handler = logging.StreamHandler()
    handler.setFormatter(MaskingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    for noisy in ("alembic", "mlflow", "urllib3", "ray"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def render_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def echo_table(table: Table) -> None:
    out.print(table)


def open_db(url: str) -> Database:
    return Database.open(url)


from orchestrator.cli import (  # noqa: E402,F401  (registers the commands)
    bundle_commands,
    defense_commands,
    report_command,
    run_commands,
    submit_command,
    view_commands,
)
