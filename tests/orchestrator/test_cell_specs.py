"""Every spec the planner writes parses into its typed model and dumps back unchanged."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from safetensors.torch import save_file

from orchestrator.study import loader
from orchestrator.study.plan import PlannedCell, canonical_json, expand
from orchestrator.study.schema import Execution
from tasks.cells import CELL_KINDS, DefenseModelSpec, TrainSpec, parse_payload, specs
from tasks.cells.specs import parse
from tasks.defenses import adaptive
from tests.conftest import need_fashion_mnist
from tests.orchestrator.golden_keys import EXAMPLES, example_data, needs_real_data
from tests.storage.stored_db import DATA, STUDY_FILE

STUDIES = [*sorted(EXAMPLES.glob("*.yaml")), STUDY_FILE]

FILES = """\
name: files
datasets:
  - name: digits
    eval_size: 32
models:
  - name: trained
    arch: mlp
    params: {hidden: [32]}
    train: {epochs: 5, lr: 0.01}
  - name: given
    arch: mlp
    params: {hidden: [16]}
    checkpoint: PATH
attacks:
  - name: fgsm
    eps: 0.1
"""


def _assert_round_trip(cells: list[PlannedCell]) -> None:
    assert cells
    for cell in cells:
        typed = parse(cell.spec)
        assert isinstance(typed, CELL_KINDS[cell.kind].specs), (cell.kind, type(typed))
        assert typed.dump() == cell.spec, cell.key
        assert canonical_json(typed.dump()) == canonical_json(cell.spec), cell.key


@pytest.fixture(autouse=True)
def _example_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples' datasets in place: small CIFAR-10 files, and the real Fashion-MNIST."""
    monkeypatch.setenv("ADVGRID_DATA", str(example_data(tmp_path)))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_planned_specs_round_trip(path: Path) -> None:
    if needs_real_data(path):
        need_fashion_mnist()
    _assert_round_trip(expand(loader.load(path)).cells)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_planned_specs_round_trip_in_bf16(path: Path) -> None:
    if needs_real_data(path):
        need_fashion_mnist()
    doc = yaml.safe_load(path.read_text())
    doc.setdefault("execution", {})["precision"] = "bf16"
    cells = expand(loader.parse(yaml.safe_dump(doc))).cells
    assert all(c.spec["precision"] == "bf16" for c in cells)
    _assert_round_trip(cells)


def test_specs_with_a_checkpoint_file_round_trip(tmp_path: Path, tiny_model) -> None:
    save_file(tiny_model().bare_state(), tmp_path / "m.st")
    cells = expand(loader.parse(FILES.replace("PATH", str(tmp_path / "m.st")))).cells
    assert any("source_checkpoint_sha256" in c.spec for c in cells)
    assert any("target_checkpoint_sha256" in c.spec for c in cells)
    _assert_round_trip(cells)


@pytest.mark.parametrize("dump", sorted(DATA.glob("advgrid-*.json")), ids=lambda p: p.stem)
def test_stored_specs_round_trip(dump: Path) -> None:
    for row in json.loads(dump.read_text())["tables"]["cells"]:
        stored = json.loads(row["spec_json"])
        assert parse(stored).dump() == stored


def test_a_defense_model_is_told_from_a_study_model() -> None:
    cells = expand(loader.load(EXAMPLES / "defenses.yaml")).cells
    kinds = {type(parse(c.spec)) for c in cells if c.kind == "train"}
    assert kinds == {TrainSpec, DefenseModelSpec}


def test_a_defense_model_takes_only_its_roles_recipe() -> None:
    cells = expand(loader.load(EXAMPLES / "defenses.yaml")).cells
    own = next(c.spec for c in cells if isinstance(parse(c.spec), DefenseModelSpec))
    role = parse(own).role
    assert role == "autoencoder"
    with pytest.raises(ValidationError, match="takes one recipe"):
        parse({**own, "typo": 1})
    with pytest.raises(ValidationError, match="takes one recipe"):
        parse({**own, role: "not a mapping"})


def test_unknown_and_missing_keys_are_refused() -> None:
    cell = expand(loader.load(EXAMPLES / "quickstart.yaml")).cells[0]
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        parse({**cell.spec, "typo": 1})
    with pytest.raises(ValidationError, match="model"):
        parse({k: v for k, v in cell.spec.items() if k != "model"})
    with pytest.raises(ValidationError):
        parse({**cell.spec, "kind": "sweep"})


def test_a_payload_keeps_what_was_sent() -> None:
    cell = expand(loader.load(EXAMPLES / "quickstart.yaml")).cells[0]
    sent = {"key": cell.key, "kind": cell.kind, "spec": cell.spec, "store": "/s", "batch_size": 8}
    payload = parse_payload({**sent, "allow_imports": "true"})
    assert payload.allow_imports == "true"  # not coerced to True: only True trusts imports
    assert parse_payload(sent).wire() == sent


def test_spec_literals_are_the_study_files_words() -> None:
    assert typing.get_args(specs.Adaptive) == adaptive.ADAPTIVE
    precision = Execution.model_fields["precision"].annotation
    assert typing.get_args(specs.Precision) == typing.get_args(precision)
