"""Component entries of a study file resolved in their registries: each a name, a label and
params validated by the component's params model, one :class:`Resolved` per point of a
parameter grid (each point validated on its own, so an error names ``attacks[0].eps[1]``)."""

from __future__ import annotations

import itertools
from typing import Annotated, get_args, get_origin

from pydantic import ValidationError

from orchestrator.study import adaptive_rules, defense_rules
from orchestrator.study.problems import Problems, describe_error
from orchestrator.study.schema import Component, Resolved
from tasks.registry import Registry


def resolve(
    registry: Registry,
    entry: Component,
    loc: tuple,
    problems: Problems,
    grid: bool,
    *,
    defense: bool = False,
) -> list[Resolved]:
    """Resolve one component entry; ``[]`` when it is invalid (the reasons go to ``problems``).

    Args:
        registry: Where the entry's name is looked up.
        entry: The entry as written.
        loc: Its path in the study file (``("attacks", 2)``).
        problems: Where errors go.
        grid: Whether list values are grids (attacks) or single values.
        defense: Whether the entry is a defense (``adaptive:``, ``models:`` are taken out).
    """
    if entry.name not in registry:
        problems.add(loc + ("name",), registry.unknown_message(entry.name))
        return []
    model = registry.get(entry.name).params
    values = entry.values
    label = str(values.pop("label", entry.name))
    method, counts, given = (
        adaptive_rules.take(values, loc, problems) if defense else ("none", (None,), False)
    )
    wraps = defense_rules.take_models(values, loc, problems) if defense else None
    takes_list = {n for n, f in model.model_fields.items() if _is_list(f.annotation)}
    axes = [k for k, v in values.items() if grid and isinstance(v, list) and k not in takes_list]
    out: list[Resolved] = []
    for combo in itertools.product(*(range(len(values[k])) for k in axes)):
        point = dict(values)
        point.update({k: values[k][i] for k, i in zip(axes, combo, strict=True)})
        try:
            params = model.model_validate(point).model_dump(mode="json")
        except ValidationError as exc:
            for err in exc.errors():
                key = err["loc"][0] if err["loc"] else None
                sub = (key, combo[axes.index(key)]) if key in axes else tuple(err["loc"][:1])
                problems.add(
                    loc + sub + tuple(err["loc"][1:]), describe_error(err, list(model.model_fields))
                )
            continue
        for eot in counts:  # an eot_samples list: one defended model per count
            if not any(r.params == params and r.eot_samples == eot for r in out):
                out.append(Resolved(entry.name, label, params, method, eot, given, models=wraps))
    return out


def _is_list(annotation: object) -> bool:
    """Whether a parameter itself takes a list (its list values are not a grid)."""
    if get_origin(annotation) is list:
        return True
    return any(_is_list(a) for a in get_args(annotation) if get_origin(annotation) is not Annotated)
