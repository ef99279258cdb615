"""``advgrid transfer``, ``curve`` and ``samples``: the study's tables and plots from the index."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from orchestrator.cli import (
    _settings,
    _study_ref,
    echo_table,
    main,
    open_db,
    render_json,
    storage_options,
    user_errors,
)
from orchestrator.config import Settings
from orchestrator.errors import AdvgridError
from orchestrator.views import curves, plots, render
from orchestrator.views import samples as samplesmod
from orchestrator.views import transfer as transfer_view
from orchestrator.views.table import TableView
from storage import ArtifactStore, Database
from storage.tables import DENOMINATORS, AttackFilter

TABLE_FORMATS = click.Choice(["table", "json", "csv", "markdown", "latex"])
PLOT_PATH = click.Path(dir_okay=False, writable=True, path_type=Path)


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
    for m in transfer_view.matrices(counts, DEFAULT):
        echo_table(render.rich_table(transfer_view.table(m)))


DEFAULT = "source_success"


def _filter(attack: str | None, eps: str | None, params: tuple[str, ...]) -> AttackFilter:
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


def _open(
    study: str, db: str | None, store: str | None, mlflow_uri: str | None
) -> tuple[str, Database, int, Settings]:
    """The study's name, its database, its id there, and the resolved settings."""
    name, loaded = _study_ref(study)
    settings = _settings(db, store, mlflow_uri, loaded)
    database: Database = open_db(settings.db_url)
    return name, database, database.get_study(name).id, settings


def filter_options(fn: click.decorators.FC) -> click.decorators.FC:
    fn = click.option(
        "--param",
        "params",
        multiple=True,
        metavar="KEY=VALUE",
        help="Further attack-parameter filter, e.g. --param steps=40 (repeatable).",
    )(fn)
    fn = click.option("--eps", default=None, help="Attack budget, e.g. 0.1 or 8/255.")(fn)
    return click.option("--attack", default=None, help="Attack name (e.g. pgd).")(fn)


@main.command()
@click.argument("study")
@storage_options
@filter_options
@click.option(
    "--denominator",
    type=click.Choice(list(DENOMINATORS)),
    default=DEFAULT,
    show_default=True,
    help="Which adversarial examples a rate counts.",
)
@click.option("--format", "fmt", type=TABLE_FORMATS, default="table", show_default=True)
@click.option(
    "--plot",
    type=PLOT_PATH,
    default=None,
    help="Also draw heatmaps to this .png/.svg/.pdf (one file per matrix: -2, -3… suffixes).",
)
def transfer(
    study: str,
    db: str | None,
    store: str | None,
    mlflow_uri: str | None,
    attack: str | None,
    eps: str | None,
    params: tuple[str, ...],
    denominator: str,
    fmt: str,
    plot: Path | None,
) -> None:
    """Transfer matrices of STUDY: how often source i's examples fool target j.

    matrix[i][j] = fooled / n, where n counts source i's adversarial examples selected by
    --denominator: source_success (those that fooled the source itself; the default, so the
    diagonal is 1.0 by construction), all (every example), or target_correct (those whose
    clean input target j classified correctly). "Fooled" means target j misclassifies it.
    Every entry carries n, the fooled count and a Wilson 95 % interval (ci95). Sources and
    targets include defended models (model+defense). With filters that select one attack
    configuration, --format json prints one object {attack, eps, sources, targets, matrix,
    n, fooled, ci95, ...}; otherwise a list of them. LaTeX output needs booktabs.

    \b
    Examples:
      advgrid transfer quickstart
      advgrid transfer quickstart --attack pgd --eps 0.1 --format json
      advgrid transfer quickstart --denominator all --format latex > transfer.tex
      advgrid transfer quickstart --attack pgd --eps 8/255 --param steps=10 --plot pgd.png
    """
    with user_errors():
        where = _filter(attack, eps, params)
        name, database, study_id, _ = _open(study, db, store, mlflow_uri)
        counts = database.transfer_counts(study_id, denominator=denominator, where=where)
        ms = transfer_view.matrices(counts, denominator)
        if not ms:
            raise AdvgridError(
                f"no done transfer cells in study {name!r} match the filters; "
                f"see `advgrid results {name} --kind transfer`"
            )
        written = plots.save_all([plots.heatmap(m) for m in ms], plot) if plot else []
    objs = [m.to_json() for m in ms]
    emit(
        fmt,
        Renderings(
            json=lambda: objs[0] if len(objs) == 1 and (attack or eps) else objs,
            csv=lambda: transfer_view.records(ms),
            tables=lambda: [transfer_view.table(m) for m in ms],
        ),
    )
    for path in written:
        click.echo(f"wrote {path}", err=True)


@main.command()
@click.argument("study")
@storage_options
@filter_options
@click.option(
    "--x",
    "x_axis",
    type=click.Choice(list(curves.X_AXES)),
    default="eps",
    show_default=True,
    help="What the curve runs over: the budget, the attack's steps, or its query budget.",
)
@click.option("--format", "fmt", type=TABLE_FORMATS, default="table", show_default=True)
@click.option(
    "--plot",
    type=PLOT_PATH,
    default=None,
    help="Also draw the curves to this .png/.svg/.pdf (one file per dataset and attack).",
)
def curve(
    study: str,
    db: str | None,
    store: str | None,
    mlflow_uri: str | None,
    attack: str | None,
    eps: str | None,
    params: tuple[str, ...],
    x_axis: str,
    fmt: str,
    plot: Path | None,
) -> None:
    """Robustness curves of STUDY: robust accuracy against eps, steps or queries.

    One curve per dataset × model (+ defense) × attack configuration; the attack's other
    parameters stay fixed along a curve. Cells that differ only in the attack's seed are
    repeats of one point: the point is their mean, with the standard deviation (n - 1) and
    the number of seeds. Minimum-norm attacks (cw, deepfool…) give one point per budget they
    were scored at. With --x eps each curve starts at eps = 0 with the clean accuracy.

    \b
    Examples:
      advgrid curve quickstart
      advgrid curve quickstart --attack pgd --plot pgd-eps.png
      advgrid curve quickstart --attack pgd --x steps --format csv > steps.csv
      advgrid curve quickstart --attack square --x max_queries --format latex
    """
    with user_errors():
        name, database, study_id, _ = _open(study, db, store, mlflow_uri)
        rows = database.attack_metrics(study_id, where=_filter(attack, eps, params))
        found = curves.build(rows, x_axis)
        if not found:
            raise AdvgridError(
                f"no done attack cells in study {name!r} vary {x_axis} under these filters; "
                f"see `advgrid results {name} --kind attack`"
            )
        written = plots.save_all(plots.curve_figures(found), plot) if plot else []
    emit(
        fmt,
        Renderings(
            json=lambda: [c.to_json() for c in found],
            csv=lambda: curves.records(found),
            tables=lambda: [curves.table(found)],
        ),
    )
    for path in written:
        click.echo(f"wrote {path}", err=True)


@main.command()
@click.argument("study")
@storage_options
@filter_options
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="NAME",
    help="Join only these targets (model or model+defense; repeatable). Default: every target.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
@click.option(
    "--grid",
    type=PLOT_PATH,
    default=None,
    help="Draw the examples that fool every target to this .png/.svg/.pdf (one per set).",
)
@click.option("--max-images", default=64, show_default=True, type=click.IntRange(1, 1024))
def samples(
    study: str,
    db: str | None,
    store: str | None,
    mlflow_uri: str | None,
    attack: str | None,
    eps: str | None,
    params: tuple[str, ...],
    targets: tuple[str, ...],
    fmt: str,
    grid: Path | None,
    max_images: int,
) -> None:
    """Per-sample joins of STUDY: how many targets each adversarial example fools.

    Each adversarial set (one source, one attack configuration) is joined with the targets
    it was evaluated on; the table gives the histogram of examples fooling 0, 1, … k targets
    and how many fool all of them. --format csv prints one row per example with the targets
    it fooled; json adds the per-example lists. --grid draws the examples that fool every
    target.

    \b
    Examples:
      advgrid samples quickstart --attack pgd
      advgrid samples quickstart --attack pgd --target mlp --target cnn --format csv
      advgrid samples quickstart --attack fgsm --grid fool-all.png
    """
    with user_errors():
        name, database, study_id, settings = _open(study, db, store, mlflow_uri)
        rows = database.transfer_outputs(study_id, where=_filter(attack, eps, params))
        artifact_store = ArtifactStore(settings.store_root)
        joins = samplesmod.join(rows, artifact_store, set(targets) if targets else None)
        if not joins:
            raise AdvgridError(
                f"no done transfer cells in study {name!r} match the filters; "
                f"see `advgrid results {name} --kind transfer`"
            )
        figs = [f for j in joins if (f := samplesmod.grid(j, artifact_store, max_images))]
        written = plots.save_all(figs, grid) if grid and figs else []
    missing = sorted({t for j in joins for t in j.missing})
    if missing:
        click.echo(
            f"note: {', '.join(missing)}: transfer cells recorded without per-sample "
            "predictions (an older advgrid) are left out of the join",
            err=True,
        )
    emit(
        fmt,
        Renderings(
            json=lambda: [j.to_json() for j in joins],
            csv=lambda: samplesmod.records(joins),
            tables=lambda: [samplesmod.table(joins)],
        ),
    )
    if grid and not figs:
        click.echo("no example fools every target: no grid drawn", err=True)
    for path in written:
        click.echo(f"wrote {path}", err=True)
