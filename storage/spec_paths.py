"""Where the index's queries read a cell's spec: every JSON path in one place.

Specs are JSON text in ``cells.spec_json`` (the cell specs of :mod:`tasks.cells.specs`,
which this layer cannot import). :mod:`storage.table_queries` and :mod:`storage.defense_queries`
read the fields below from it in SQL; a path is a tuple of keys, bound as a parameter
(``$.a.b`` on SQLite, ``{a,b}`` on PostgreSQL). :data:`USED_ON` says on which kinds of cell
each is read, and ``tests/tasks/test_spec_paths.py`` checks that each resolves to a field
of those kinds' spec models, so renaming a spec field cannot silently empty a table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from storage.enums import CellKind

Path = tuple[str, ...]

DATASET_LABEL: Path = ("dataset", "label")
"""The label the study gave the dataset."""

EVAL_HASH: Path = ("eval_hash",)
"""The hash of the evaluation slice's sample indices."""

ATTACK_NAME: Path = ("attack", "name")
"""The attack's registry name."""

ATTACK_PARAMS: Path = ("attack", "params")
"""The attack's normalized params (an object)."""

DEFENSE_ADAPTIVE: Path = ("defense", "adaptive")
"""How an attack cell's attack adapted to its defense; absent when it did not."""


def attack_param(name: str) -> Path:
    """One of the attack's params (``eps``, ``steps``…); the caller checks ``name``."""
    return (*ATTACK_PARAMS, name)


ATTACK_EPS: Path = attack_param("eps")
"""The attack's budget: a number, or a list of budgets for minimum-norm attacks."""


class ModelSide(NamedTuple):
    """Where a spec names a defended model: the model and its defense's name, label and
    params. An attack cell has one side (its source); a transfer cell has two."""

    model: Path
    defense_name: Path
    defense_label: Path
    defense_params: Path


SOURCE = ModelSide(("source",), ("defense", "name"), ("defense", "label"), ("defense", "params"))
"""The attacked model of an attack cell, or the one a transfer cell's examples came from."""

TARGET = ModelSide(
    ("target",),
    ("target_defense", "name"),
    ("target_defense", "label"),
    ("target_defense", "params"),
)
"""The model a transfer cell evaluates the examples on."""

_EVALUATED = (CellKind.ATTACK, CellKind.TRANSFER)

USED_ON: Mapping[Path, tuple[CellKind, ...]] = {
    DATASET_LABEL: _EVALUATED,
    EVAL_HASH: _EVALUATED,
    ATTACK_NAME: _EVALUATED,
    ATTACK_PARAMS: _EVALUATED,
    ATTACK_EPS: _EVALUATED,
    DEFENSE_ADAPTIVE: (CellKind.ATTACK,),
    **dict.fromkeys(SOURCE, _EVALUATED),
    **dict.fromkeys(TARGET, (CellKind.TRANSFER,)),
}
"""Every path above, with the kinds of cell the queries read it on."""
