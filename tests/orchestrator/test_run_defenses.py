"""Inference-time defenses in a study: validated from the file, applied to transfer targets."""

from __future__ import annotations

import json

import pytest
import torch

from orchestrator.errors import ConfigError
from orchestrator.study import loader
from storage import ArtifactStore, Database
from tests.conftest import Cli, RunStudy

# one source: attack cells run on mlp behind each defense; a gradient-free attack, since a
# gradient attack on a non-differentiable defense needs an adaptive (BPDA) evaluation
STUDY = """\
name: defended
datasets:
  - name: digits
    eval_size: 32
models:
  - name: mlp
    arch: mlp
    params: {hidden: [64]}
    train: {epochs: 15, lr: 0.005, seed: 0}
  - name: mlp2
    arch: mlp
    params: {hidden: [32]}
    train: {epochs: 15, lr: 0.005, seed: 1}
defenses: [{name: none}, {name: jpeg, quality: 75}, {name: bit_depth, bits: 3, label: bits3}]
attacks:
  - name: square
    eps: 0.1
    max_queries: 50
sources: [mlp]
execution:
  batch_size: 16
"""


def test_the_study_file_accepts_inference_defenses() -> None:
    study = loader.parse(STUDY, "study.yaml")
    assert [(d.name, d.label, d.params) for d in study.defenses] == [
        ("none", "none", {}),
        ("jpeg", "jpeg", {"quality": 75}),
        ("bit_depth", "bits3", {"bits": 3}),
    ]
    with pytest.raises(ConfigError) as info:
        loader.parse(STUDY.replace("quality: 75", "quality: 101"), "study.yaml")
    assert any("defenses[1].quality" in p for p in info.value.problems)


@pytest.fixture(scope="module")
def finished(run_study: RunStudy) -> dict[str, str]:
    return run_study(STUDY, "-q", file="defended.yaml").env


def test_transfer_cells_reach_defended_targets(finished, cli: Cli) -> None:
    rows = json.loads(cli("results", "defended", "--format", "json", env=finished).output)
    assert [r["state"] for r in rows].count("done") == len(rows) == 2 + 3 + 3 * 2 * 3
    attack = {(r["model"], r["defense"]) for r in rows if r["kind"] == "attack"}
    assert attack == {("mlp", "none"), ("mlp", "jpeg"), ("mlp", "bit_depth")}
    transfer = {(r["source"], r["target"]) for r in rows if r["kind"] == "transfer"}
    labelled = {f"mlp{d}" for d in ("", "+jpeg", "+bits3")}
    targets = labelled | {f"mlp2{d}" for d in ("", "+jpeg", "+bits3")}
    assert transfer == {(s, t) for s in labelled for t in targets}


def test_defended_targets_are_evaluated_behind_their_defense(finished) -> None:
    """Recompute every transfer onto a defended target from the stored artifacts."""
    from tasks import defenses
    from tasks.cells.worker import load_model

    db = Database.open(finished["ADVGRID_DB"])
    cells = db.cells(db.get_study("defended").id)
    by_key = {c.key: c for c in cells}
    store = ArtifactStore(finished["ADVGRID_STORE"])
    changed = 0
    for cell in cells:
        target_defense = json.loads(cell.spec_json).get("target_defense", {})
        if cell.kind != "transfer" or target_defense["name"] == "none":
            continue
        attack_key, train_key = sorted(cell.depends_on, key=lambda k: by_key[k].kind)
        adv, _ = store.get(by_key[attack_key].artifacts["adversarial"])
        stored, _ = store.get(cell.artifacts["predictions"])
        payload = {"inputs": {"checkpoint": by_key[train_key].artifacts["checkpoint"]}}
        model = load_model(payload, "checkpoint", store, torch.device("cpu"))
        name, values = target_defense["name"], target_defense["params"]
        defended = defenses.wrap(model, name, defenses.DEFENSES.params_of(name, values))
        with torch.inference_mode():
            assert torch.equal(stored["pred_adv"], defended(adv["x_adv"]).argmax(1))
            changed += int((stored["pred_adv"] != model(adv["x_adv"]).argmax(1)).sum())
    assert changed > 0  # the defenses change some predictions: they were applied
