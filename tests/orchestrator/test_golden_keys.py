"""Every cell key of the example studies and of the stored databases stays what it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import need_fashion_mnist
from tests.orchestrator.golden_keys import EXAMPLES, GOLDEN, needs_real_data, planned
from tests.storage.stored_db import DATA, STUDY_FILE

RECORDED = json.loads(GOLDEN.read_text())
STORED = sorted(DATA.glob("advgrid-*.json"))


def test_every_example_is_recorded() -> None:
    assert sorted(RECORDED) == sorted(f.name for f in EXAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_example_keys_are_unchanged(name: str) -> None:
    if needs_real_data(EXAMPLES / name):
        need_fashion_mnist()
    now, before = planned(EXAMPLES / name), RECORDED[name]
    changed = [i for i, (a, b) in enumerate(zip(now, before, strict=False)) if a != b]
    assert len(now) == len(before), f"{name}: {len(now)} cells planned, {len(before)} recorded"
    assert not changed, f"{name}: {len(changed)} keys differ, first at cell {changed[0]}"


def test_both_stored_revisions_are_here() -> None:
    assert [f.name for f in STORED] == ["advgrid-0001.json", "advgrid-0002.json"]


@pytest.mark.parametrize("dump", STORED, ids=lambda p: p.stem)
def test_stored_database_keys_are_what_the_planner_makes(dump: Path) -> None:
    tables = json.loads(dump.read_text())["tables"]
    stored = {(c["kind"], c["key"]) for c in tables["cells"]}
    assert len(stored) == 8
    assert {(kind, key) for kind, key in planned(STUDY_FILE)} == stored
