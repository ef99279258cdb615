"""``advgrid min-norm``: the smallest perturbation that fools each defended model, per
sample, over every attack on it, read at budgets."""

from __future__ import annotations

import click

from orchestrator.cli.options import (
    TABLE_FORMATS,
    Renderings,
    attack_filter,
    emit,
    filter_options,
    open_study,
    storage_options,
    user_errors,
)
from orchestrator.errors import AdvgridError
from orchestrator.views import min_norm
from storage import ArtifactStore


@click.command("min-norm")
@click.argument("study")
@storage_options
@filter_options
@click.option(
    "--norm",
    type=click.Choice(sorted(min_norm.NORMS)),
    default="l2",
    show_default=True,
    help="The norm of the perturbations x_adv − x.",
)
@click.option(
    "--budget",
    "budgets",
    multiple=True,
    type=click.FloatRange(min=0),
    help="Budgets to read robust accuracy at (repeatable). Default: 0.5, 1, 2 for l2; "
    "0.05, 0.1, 0.2 for linf; 2, 4, 8 for l1.",
)
@click.option(
    "--transfers/--no-transfers",
    default=True,
    show_default=True,
    help="Count the transfer cells onto each defended model (examples crafted on other "
    "models and defenses, such as the α = 0 surrogate of a purifier).",
)
@click.option("--format", "fmt", type=TABLE_FORMATS, default="table", show_default=True)
def min_norm_command(
    study: str,
    db: str | None,
    store: str | None,
    mlflow_uri: str | None,
    attack: str | None,
    eps: str | None,
    params: tuple[str, ...],
    norm: str,
    budgets: tuple[float, ...],
    transfers: bool,
    fmt: str,
) -> None:
    """Minimum perturbation per sample over every attack on each defended model of STUDY.

    For every model (+ defense), each sample's smallest perturbation norm among the stored
    adversarial examples that fool it, over all its attack cells (adaptive ones and their
    non-adaptive twins, every attack and budget) and, unless --no-transfers, the transfer
    cells onto it (examples crafted on other models or on other defenses of the same model,
    such as vae_purify's deterministic α = 0 pipeline as a surrogate for mlvgm_purify): 0
    where the clean input is already misclassified, never where no attack fooled it.
    Robust accuracy at a budget is the share of samples whose minimum exceeds it, the worst
    case over all attacks, sample by sample. Norms are recomputed from the stored examples
    and the dataset's images.
    --format csv prints one row per sample; json adds the per-sample minima.

    \b
    Examples:
      advgrid min-norm generative
      advgrid min-norm generative --budget 0.25 --budget 0.5 --budget 1
      advgrid min-norm defenses --norm linf --attack pgd
      advgrid min-norm generative --no-transfers     # attack cells on each model only
      advgrid min-norm generative --format json > min-l2.json
    """
    chosen = budgets or min_norm.DEFAULT_BUDGETS[norm]
    with user_errors():
        name, database, study_id, settings = open_study(study, db, store, mlflow_uri)
        outputs = database.attack_outputs(study_id, where=attack_filter(attack, eps, params))
        if not outputs:
            which = "match the filters" if params or attack or eps else "are done"
            raise AdvgridError(
                f"no attack cells in study {name!r} {which}; "
                f"see `advgrid results {name} --kind attack`"
            )
        where = attack_filter(attack, eps, params)
        moved = database.transfer_outputs(study_id, where=where) if transfers else []
        rows = min_norm.build(outputs, ArtifactStore(settings.store_root), norm, moved)
    emit(
        fmt,
        Renderings(
            json=lambda: [r.to_json(chosen) for r in rows],
            csv=lambda: min_norm.records(rows),
            tables=lambda: [min_norm.table(rows, chosen, norm)],
        ),
    )
