"""``advgrid results``, ``transfer``, ``curve``, ``samples`` and ``defenses``: the study's
tables and plots from the index."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.options import (
    DEFAULT_DENOMINATOR,
    PLOT_PATH,
    TABLE_FORMATS,
    Renderings,
    attack_filter,
    emit,
    err,
    filter_options,
    open_db,
    open_study,
    resolve_settings,
    storage_options,
    study_ref,
    user_errors,
)
from orchestrator.errors import AdvgridError
from orchestrator.views import curves, defended, plots, result_rows
from orchestrator.views import samples as samplesmod
from orchestrator.views import transfer as transfer_view
from storage import ArtifactStore
from storage.table_queries import DENOMINATORS
from tasks.cells import CELL_KINDS


@click.command()
@click.argument("study")
@storage_options
@click.option("--format", "fmt", type=TABLE_FORMATS, default="table", show_default=True)
@click.option(
    "--kind",
    type=click.Choice([str(kind) for kind in CELL_KINDS]),
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
        name, loaded = study_ref(study)
        database = open_db(resolve_settings(db, store, mlflow_uri, loaded).db_url)
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


@click.command()
@click.argument("study")
@storage_options
@filter_options
@click.option(
    "--denominator",
    type=click.Choice(list(DENOMINATORS)),
    default=DEFAULT_DENOMINATOR,
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
        where = attack_filter(attack, eps, params)
        name, database, study_id, _ = open_study(study, db, store, mlflow_uri)
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


@click.command()
@click.argument("study")
@storage_options
@filter_options
@click.option(
    "--x",
    "x_axis",
    type=click.Choice(list(curves.X_AXES)),
    default="eps",
    show_default=True,
    help="What the curve runs over: the budget, the attack's steps, its query budget, or a "
    "corruption's severity.",
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
        name, database, study_id, _ = open_study(study, db, store, mlflow_uri)
        rows = database.attack_metrics(study_id, where=attack_filter(attack, eps, params))
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


@click.command()
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
        name, database, study_id, settings = open_study(study, db, store, mlflow_uri)
        rows = database.transfer_outputs(study_id, where=attack_filter(attack, eps, params))
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


@click.command()
@click.argument("study")
@storage_options
@filter_options
@click.option("--format", "fmt", type=TABLE_FORMATS, default="table", show_default=True)
def defenses(
    study: str,
    db: str | None,
    store: str | None,
    mlflow_uri: str | None,
    attack: str | None,
    eps: str | None,
    params: tuple[str, ...],
    fmt: str,
) -> None:
    """Defended models of STUDY: clean, oblivious and adaptive robust accuracy, and the gap.

    One row per model (+ defense) and attack configuration. "oblivious" is the attack
    crafted on the undefended model and evaluated behind the defense (the transfer cell
    model -> model+defense; it needs `none` among the study's defenses and the model among
    its targets). "adaptive" is the attack run on the defended model itself, through BPDA
    and/or EOT where the defense's `adaptive:` says so. gap = oblivious - adaptive: the
    robustness that only the non-adaptive number showed. Flags mark gradient masking per
    defended model: black_box_wins (a gradient-free attack beats the gradient attacks at
    the same eps), vanishing_gradient (input gradients zero or far below the undefended
    model's), eps_not_monotone (robust accuracy not falling as eps grows), randomized (a
    random forward pass: the number needs EOT). Flags are computed from every attack cell
    of the study, whatever the filters show. LaTeX output needs booktabs.

    \b
    Examples:
      advgrid defenses study.yaml
      advgrid defenses adaptive --attack pgd --eps 0.1
      advgrid defenses adaptive --format json > defenses.json
      advgrid defenses adaptive --format latex > defenses.tex
    """
    with user_errors():
        where = attack_filter(attack, eps, params)
        name, database, study_id, _ = open_study(study, db, store, mlflow_uri)
        every = database.defense_evaluations(study_id)
        selected = (
            database.defense_evaluations(study_id, where=where)
            if params or attack or eps
            else every
        )
        rows = defended.build(selected, every)
        if not rows:
            which = "match the filters" if params or attack or eps else "are done"
            raise AdvgridError(
                f"no attack cells in study {name!r} {which}; "
                f"see `advgrid results {name} --kind attack`"
            )
    missing = defended.missing_oblivious(rows)
    if missing and fmt == "table":
        err.print(
            f"note: no oblivious number for {', '.join(missing)}: it is the transfer cell from "
            "the undefended model, so list `none` among the study's defenses and the model "
            "among its targets"
        )
    emit(
        fmt,
        Renderings(
            json=lambda: [r.to_json() for r in rows],
            csv=lambda: defended.records(rows),
            tables=lambda: [defended.table(rows)],
        ),
    )
    if fmt == "table":
        for line in defended.reasons(rows):
            click.echo(line)
