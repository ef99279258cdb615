"""The table of cell kinds covers every kind the index knows, and nothing else."""

from __future__ import annotations

import pytest

from orchestrator.study import loader
from orchestrator.study.plan import expand
from storage.enums import CellKind
from tasks.cells import CELL_KINDS
from tasks.errors import UnknownComponentError
from tests.orchestrator.golden_keys import EXAMPLES


def test_every_kind_has_one_entry_in_plan_order() -> None:
    assert tuple(CELL_KINDS) == tuple(CellKind) == ("train", "attack", "transfer")
    assert all(entry.kind == kind for kind, entry in CELL_KINDS.items())


def test_each_kind_names_its_runner_specs_and_summary_metrics() -> None:
    for entry in CELL_KINDS.values():
        assert callable(entry.run)
        assert entry.specs
        kinds = {spec.model_fields["kind"].annotation.__args__ for spec in entry.specs}
        assert kinds == {(entry.kind,)}
        assert entry.summary_metrics
    assert CELL_KINDS[CellKind.TRANSFER].group_by == "adversarial"
    assert CELL_KINDS[CellKind.TRAIN].group_by is None


def test_a_kind_is_registered_once_and_an_unknown_one_is_named() -> None:
    with pytest.raises(ValueError, match="cell kind 'train' is already registered"):
        CELL_KINDS.register(CELL_KINDS["train"])
    with pytest.raises(UnknownComponentError, match="unknown cell kind 'sweep'; this advgrid runs"):
        CELL_KINDS["sweep"]


def test_a_kind_parses_the_specs_of_each_of_its_models() -> None:
    for cell in expand(loader.load(EXAMPLES / "defenses.yaml")).cells:
        typed = CELL_KINDS[cell.kind].parse(cell.spec)
        assert type(typed) in CELL_KINDS[cell.kind].specs
        assert typed.dump() == cell.spec
