"""The table of cell kinds covers every kind the index knows, and nothing else."""

from __future__ import annotations

from storage.enums import CellKind
from tasks.cells import CELL_KINDS


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
