"""``advgrid report``: a study's tables, plots and examples as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.options import (
    open_db,
    resolve_settings,
    storage_options,
    study_ref,
    user_errors,
)
from orchestrator.report import data as report_data
from orchestrator.report import page as report_page
from storage.table_queries import DENOMINATORS


@click.command()
@click.argument("study")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML file to write (its folder must exist).",
)
@storage_options
@click.option(
    "--denominator",
    type=click.Choice(list(DENOMINATORS)),
    default="source_success",
    show_default=True,
    help="Which adversarial examples a transfer rate counts.",
)
@click.option(
    "--examples",
    "example_cells",
    type=click.IntRange(min=0),
    metavar="N",
    default=8,
    show_default=True,
    help="Show adversarial examples of the first N attack cells (0: none).",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    metavar="N",
    default=6,
    show_default=True,
    help="Examples per attack cell, successful ones first.",
)
def report(
    study: str,
    output: Path,
    db: str | None,
    store: str | None,
    mlflow_uri: str | None,
    denominator: str,
    example_cells: int,
    samples: int,
) -> None:
    """Write STUDY (a name or its file) as one HTML page to send to a colleague.

    The page holds the cell counts and failures, every transfer matrix (rate %, Wilson 95 %
    interval and n per entry, with a heatmap), the robustness curves, the attack results,
    adversarial examples next to their clean inputs, the study file, and the environment:
    versions, platform, git commit, database (masked), store, model weights and evaluation
    slices. It loads nothing from anywhere: figures and images are inside the file.

    \b
    Examples:
      advgrid report quickstart -o report.html
      advgrid report examples/quickstart.yaml -o out/quickstart.html --denominator all
      advgrid report quickstart -o report.html --examples 2 --samples 10
    """
    with user_errors():
        report_page.check_output(output)
        name, loaded = study_ref(study)
        settings = resolve_settings(db, store, mlflow_uri, loaded)
        options = report_data.Options(
            db_url=settings.db_url,
            store_root=settings.store_root,
            denominator=denominator,
            git_folder=Path(study).resolve().parent if loaded else Path.cwd(),
            example_cells=example_cells,
            samples=samples,
        )
        page = report_data.collect(open_db(settings.db_url), name, options)
        size = report_page.write(page, output)
    click.echo(f"wrote {output} ({size / 1024:.0f} KiB)", err=True)
