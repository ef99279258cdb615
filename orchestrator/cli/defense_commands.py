"""``advgrid defenses``: clean, oblivious and adaptive robust accuracy of defended models."""

from __future__ import annotations

import click

from orchestrator.cli import err, main, storage_options, user_errors
from orchestrator.cli.view_commands import (
    TABLE_FORMATS,
    Renderings,
    _filter,
    _open,
    emit,
    filter_options,
)
from orchestrator.errors import AdvgridError
from orchestrator.views import defended


@main.command()
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
        where = _filter(attack, eps, params)
        name, database, study_id, _ = _open(study, db, store, mlflow_uri)
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
