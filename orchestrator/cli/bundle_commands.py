"""``advgrid export`` and ``advgrid import``: move a study's results between labs."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.options import (
    open_db,
    out,
    resolve_settings,
    storage_options,
    study_ref,
    user_errors,
)
from storage import ArtifactStore, __version__, export_bundle, import_bundle


@click.command(name="export")
@click.argument("study")
@click.option(
    "-o",
    "--output",
    "bundle",
    required=True,
    type=click.Path(dir_okay=True, path_type=Path),
    metavar="BUNDLE",
    help="Bundle to write (must not exist): a folder, or a file ending in .tar or .tar.gz.",
)
@click.option(
    "--state",
    type=click.Choice(["done"]),
    default="done",
    show_default=True,
    help="Which cells to export.",
)
@storage_options
def export(
    study: str,
    bundle: Path,
    state: str,
    db: str | None,
    store: str | None,
    mlflow_uri: str | None,
) -> None:
    """Write STUDY's (a name or its file) done cells and their artifacts to BUNDLE.

    The bundle holds the study's spec, every done cell with its metrics, and every
    artifact those cells name (checkpoints and adversarial sets), re-hashed as they are
    copied. `advgrid import BUNDLE` merges it into another lab's index and store.

    \b
    Examples:
      advgrid export quickstart -o quickstart.tar.gz
      advgrid export study.yaml -o /media/usb/study-bundle
      advgrid export quickstart -o q.tar --db postgresql://lab@dbhost/advgrid
    """
    with user_errors():
        name, loaded = study_ref(study)
        settings = resolve_settings(db, store, mlflow_uri, loaded)
        summary = export_bundle(
            open_db(settings.db_url),
            ArtifactStore(settings.store_root),
            name,
            bundle,
            advgrid_version=__version__,
        )
    out.print(
        f"exported study {summary.study!r} to {summary.path}: {summary.cells} {state} cells, "
        f"{summary.artifacts} artifacts ({summary.bytes / 1e6:.1f} MB)"
    )


@click.command(name="import")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@storage_options
def import_(bundle: Path, db: str | None, store: str | None, mlflow_uri: str | None) -> None:
    """Merge BUNDLE (written by `advgrid export`) into this index and store.

    Cells are matched by key. A new cell is inserted as done; a cell done here already is
    skipped; a pending, failed or quarantined cell takes the imported result; a cell running
    here under a live lease is left to its driver (import again later). The study is
    created from the bundle if there is none by its name. The whole bundle is checked
    (manifest, every file re-hashed) before anything is written; importing twice changes
    nothing. The next `advgrid run` logs the imported cells to MLflow.

    \b
    Examples:
      advgrid import quickstart.tar.gz
      advgrid import /media/usb/study-bundle --db postgresql://lab@dbhost/advgrid \\
          --store /nfs/advgrid
    """
    with user_errors():
        settings = resolve_settings(db, store, mlflow_uri)
        s = import_bundle(open_db(settings.db_url), ArtifactStore(settings.store_root), bundle)
    out.print(
        f"imported {bundle} into study {s.study!r}"
        f"{' (created)' if s.study_created else ''}: cells {s.inserted} inserted, "
        f"{s.updated} updated, {s.skipped} skipped (done here already)"
        + (f", {s.running} left to the driver running them" if s.running else "")
        + f"; artifacts {s.artifacts_copied} copied, {s.artifacts_present} already present"
    )
