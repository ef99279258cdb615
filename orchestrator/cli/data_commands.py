"""``advgrid data``: where the datasets read from files are, fetching them, checking them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from orchestrator.cli.options import echo_table, err, out, user_errors
from tasks.datasets import DATASETS, FileFormat, MissingDataError, sources
from tasks.errors import TaskError

ROOT = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="The dataset's folder [default: $ADVGRID_DATA/NAME, else ~/.advgrid/data/NAME].",
)


@click.group()
def data() -> None:
    """Datasets read from files: where they are read from, fetching and checking them.

    \b
    Examples:
      advgrid data ls
      advgrid data download cifar10
      advgrid data verify fashion_mnist
    """


@data.command(name="ls")
def ls() -> None:
    """Each dataset read from files, the folder it is read from and whether its files are there.

    A dataset's folder is its `root:` in the study, else $ADVGRID_DATA/NAME, else
    ~/.advgrid/data/NAME (or a folder an operating-system package installed it to).

    \b
    Examples:
      advgrid data ls
      ADVGRID_DATA=/nfs/datasets advgrid data ls
    """
    table = Table(title_justify="left")
    for col in ("name", "folder", "files there", "what is missing", "fetch with"):
        table.add_column(col)
    with user_errors():
        for entry in DATASETS:
            if not isinstance(entry.obj, FileFormat):
                continue
            folder = sources.folder_of(entry.name)
            missing = _missing(entry.obj, entry.name, folder)
            table.add_row(
                entry.name,
                escape(str(folder)),
                "[red]no[/]" if missing else "[green]yes[/]",
                escape(missing),
                f"advgrid data download {entry.name}" if entry.name in sources.SOURCES else "",
            )
    echo_table(table)


def _status(row: sources.Check) -> str:
    if row.ok:
        return "[green]ok[/]"
    return "[red]missing[/]" if row.found == "missing" else "[red]mismatch[/]"


def _missing(fmt: FileFormat, name: str, folder: Path) -> str:
    """What of dataset ``name`` is missing from ``folder`` ("" when nothing is), found
    without reading the files."""
    params = DATASETS.params_of(name, {"root": str(folder)})
    try:
        fmt.files(params)  # type: ignore[arg-type]
    except MissingDataError as exc:  # "dataset 'x' at ROOT: WHAT. Expected there: …"
        return str(exc).partition(": ")[2].partition(". Expected")[0]
    except (TaskError, OSError) as exc:  # there but unreadable: say why, list the others
        return f"unreadable: {exc}"
    return ""


@data.command()
@click.argument("name")
@ROOT
@click.option(
    "--optional", is_flag=True, help="Also the optional files (SVHN's 1.3 GB extra samples)."
)
def download(name: str, root: Path | None, optional: bool) -> None:
    """Download dataset NAME into its folder, check every file's checksum and unpack it.

    Files already there that check out are kept. $ADVGRID_DATA_MIRROR=URL fetches every
    file from URL/NAME/FILE instead (a lab's own copy).

    \b
    Examples:
      advgrid data download cifar10
      advgrid data download mnist --root /data/mnist
      advgrid data download svhn --optional
    """
    with user_errors(), _progress() as report:
        folder = sources.download(name, root, report, optional=optional)
    out.print(f"{name}: files in {escape(str(folder))} downloaded and checked")


@contextmanager
def _progress() -> Iterator[sources.Progress]:
    """A rich progress bar per file on stderr, as ``(file, done, total)`` callbacks."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )
    tasks: dict[str, TaskID] = {}

    def report(file: str, done: int, total: int | None) -> None:
        if file not in tasks:
            tasks[file] = bar.add_task(escape(file), total=total)
        bar.update(tasks[file], completed=done, total=total)

    with bar:
        yield report


@data.command()
@click.argument("name")
@ROOT
def verify(name: str, root: Path | None) -> None:
    """Check the files of dataset NAME against their published checksums.

    Files are checked by MD5 where one is published; the extracted CIFAR binary files have
    none and are checked by their record count and size. Exits 1 when a file is missing or
    does not match.

    \b
    Examples:
      advgrid data verify fashion_mnist
      advgrid data verify cifar10 --root /data/cifar
    """
    with user_errors():
        folder = sources.folder_of(name, root)
        rows = sources.verify(name, folder)
    table = Table(title=f"{name} in {escape(str(folder))}", title_justify="left")
    for col in ("file", "expected", "found", "status"):
        table.add_column(col)
    for r in rows:
        table.add_row(escape(r.file), escape(r.expected), escape(r.found), _status(r))
    echo_table(table)
    bad = [r for r in rows if not r.ok]
    if bad:
        err.print(
            f"{len(bad)} of {len(rows)} files missing or not matching; fetch them with "
            f"`advgrid data download {name} --root {escape(str(folder))}`",
            soft_wrap=True,
        )
        click.get_current_context().exit(1)
