"""``advgrid list``: the registered components of each kind and their parameters."""

from __future__ import annotations

import json
from typing import Any

import click
from pydantic import BaseModel
from rich.markup import escape
from rich.table import Table

from orchestrator.cli.options import echo_table, render_json
from tasks.attacks import ATTACKS
from tasks.datasets import DATASETS
from tasks.defenses import DEFENSES
from tasks.models import MODELS
from tasks.train_defenses import TRAINING_DEFENSES

REGISTRIES = {"attacks": ATTACKS, "defenses": DEFENSES, "models": MODELS, "datasets": DATASETS}


@click.command(name="list")
@click.argument("kind", type=click.Choice(sorted(REGISTRIES)))
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def list_(kind: str, fmt: str) -> None:
    """The registered components of KIND with a one-line summary and their parameters.

    Defenses come in two stages: `inference` defenses wrap a model (the study's
    `defenses:` axis); `training` defenses train one (a recipe's `train: {defense: ...}`).
    Models: besides those listed, `arch: torchvision:NAME` builds one of torchvision's
    classifiers (weights never downloaded), and `arch: package.module:factory` your own.

    \b
    Examples:
      advgrid list attacks
      advgrid list defenses
      advgrid list datasets --format json
    """
    entries = _listed(kind)
    if fmt == "json":
        render_json(
            [
                {
                    "name": e.name,
                    **({"stage": stage} if stage else {}),
                    "summary": e.summary,
                    "params": json.loads(json.dumps(e.params.model_json_schema())),
                }
                for e, stage in entries
            ]
        )
        return
    table = Table(title_justify="left")
    staged = kind == "defenses"
    for col in ("name", *(["stage"] if staged else []), "summary", "params (defaults)"):
        table.add_column(col)
    for e, stage in entries:
        fields = ", ".join(f"{n}={_default(f)}" for n, f in e.params.model_fields.items())
        table.add_row(e.name, *([stage] if staged else []), escape(e.summary), escape(fields))
    echo_table(table)
    if kind == "models" and fmt == "table":
        click.echo(
            "Also: torchvision:NAME (torchvision's classifiers, e.g. torchvision:resnet50) and "
            "package.module:factory (your own code, with `allow_imports: true`)."
        )


def _listed(kind: str) -> list[tuple[Any, str]]:
    """The entries ``advgrid list KIND`` shows, each with its stage (defenses only)."""
    if kind == "defenses":
        return [(e, "inference") for e in DEFENSES] + [(e, "training") for e in TRAINING_DEFENSES]
    return [(e, "") for e in REGISTRIES[kind]]


def _default(field: Any) -> str:
    """A parameter's default as a study file would write it (``8/255`` stays readable)."""
    if field.is_required():
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, float):
        short = f"{value:g}"
        # 8/255 reads better than 0.0313725; 0.6 better than 153/255
        if len(short) > 5 and 0 < value < 1 and abs(value * 255 - round(value * 255)) < 1e-9:
            return f"{round(value * 255)}/255"
        return short
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, BaseModel):  # a nested recipe (a generator's): its own defaults
        inner = ", ".join(f"{n}={_default(f)}" for n, f in type(value).model_fields.items())
        return "{" + inner + "}"
    return repr(value)
