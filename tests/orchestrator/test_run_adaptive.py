"""Adaptive evaluation end to end on digits: JPEG and bit-depth reduction attacked through
BPDA, next to their non-adaptive and oblivious numbers, and `advgrid defenses` over the
result."""

from __future__ import annotations

import json

import pytest
import torch

from storage import ArtifactStore, Database
from tests.conftest import Cli, RunStudy

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = """\
name: adaptive
datasets:
  - name: digits
    eval_size: 128
models:
  - name: mlp
    arch: mlp
    params: {hidden: [64]}
    train: {epochs: 15, lr: 0.005, seed: 0}
defenses:
  - name: none
  - {name: jpeg, quality: 75, adaptive: bpda}
  - {name: bit_depth, bits: 2, label: bits2, adaptive: bpda}
attacks:
  - name: fgsm
    eps: 0.12
  - name: pgd
    eps: 0.12
    steps: 10
execution:
  batch_size: 64
"""


@pytest.fixture(scope="module")
def finished(run_study: RunStudy) -> dict[str, str]:
    return run_study(STUDY, "-q", file="adaptive.yaml").env


@pytest.fixture(scope="module")
def table(finished: dict[str, str]) -> dict[tuple[str, str], dict]:
    out = Cli()("defenses", "adaptive", "--format", "json", env=finished)
    assert out.exit_code == 0, out.output
    return {(r["model"], r["attack"]): r for r in json.loads(out.output)}


def test_the_shape_of_an_adaptive_evaluation_on_digits(table: dict) -> None:
    """Measured (mlp, 128 samples, eps 0.12; fgsm / pgd-10 robust accuracy %): undefended
    white-box 49.2 / 43.8; jpeg non-adaptive 96.9 / 95.3, oblivious 50.8 / 46.1, BPDA
    49.2 / 48.4; bit depth 2 non-adaptive 96.1 / 94.5, oblivious 70.3 / 68.0, BPDA 71.9 /
    68.0; clean 96.9 (jpeg), 96.1 (bits).

    Both transforms look robust to the plain white-box attack, which follows autograd's
    gradient through them (zero: a rounding, a codec), and lose it under BPDA: the
    obfuscation Athalye et al. describe. Bit-depth reduction also looks robust to the attack
    that ignores it; on 8×8 digits that part is real (at this budget most pixels cannot cross
    a rounding threshold at all, so BPDA takes away no more than the transfer attack did),
    and JPEG on one 8×8 block barely changes an L∞ perturbation.
    """
    for attack in ("fgsm", "pgd"):
        white_box = table[("mlp", attack)]["adaptive_robust_accuracy"]
        bits = table[("mlp+bits2", attack)]
        assert bits["oblivious_robust_accuracy"] >= white_box + 0.15
        for model in ("mlp+jpeg", "mlp+bits2"):
            row = table[(model, attack)]
            assert row["adaptive"] == "bpda"
            naive, robust = row["non_adaptive_robust_accuracy"], row["adaptive_robust_accuracy"]
            assert naive >= row["clean_accuracy"] - 0.05  # a zero gradient moves nothing
            assert robust <= naive - 0.2
            assert robust <= row["oblivious_robust_accuracy"] + 0.08
            assert robust <= row["clean_accuracy"] - 0.15
            assert row["gap"] == pytest.approx(
                max(naive, row["oblivious_robust_accuracy"]) - robust
            )
            # the twin's masked gradient is flagged on the adapted row, and marked so
            (flag,) = row["flags"]
            assert flag["flag"] == "vanishing_gradient"
            assert flag["reason"].startswith("without adaptation: ")
    assert table[("mlp", "fgsm")]["flags"] == table[("mlp", "pgd")]["flags"] == []
    assert all(r["adaptive"] == "bpda" for r in table.values() if r["defense"] != "none")


def test_the_table_shows_the_four_numbers(finished: dict[str, str], table: dict) -> None:
    out = Cli()("defenses", "adaptive", "--attack", "pgd", env=finished)
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if "mlp+bits2" in line and "│" in line]
    row = table[("mlp+bits2", "pgd")]
    keys = ("clean_accuracy", "non_adaptive_robust_accuracy", "oblivious_robust_accuracy")
    numbers = [f"{row[k] * 100:.1f}" for k in (*keys, "adaptive_robust_accuracy")]
    assert len(lines) == 1
    assert "bpda" in lines[0]
    assert all(n in lines[0] for n in numbers)
    assert f"{row['gap'] * 100:+.1f}" in lines[0]


def test_non_adaptive_twins_follow_the_masked_gradient(finished: dict[str, str]) -> None:
    """Each adapted attack cell has a twin without BPDA: its gradient is zero everywhere, so
    FGSM leaves every input where it was, and it has no transfer cells of its own."""
    db = Database.open(finished["ADVGRID_DB"])
    cells = db.cells(db.get_study("adaptive").id)
    specs = {c.key: json.loads(c.spec_json) for c in cells}
    twins = [
        c
        for c in cells
        if c.kind == "attack"
        and specs[c.key]["defense"]["name"] != "none"
        and "adaptive" not in specs[c.key]["defense"]
    ]
    assert len(twins) == 4  # jpeg, bits2 × fgsm, pgd
    used = {k for c in cells if c.kind == "transfer" for k in c.depends_on}
    for twin in twins:
        m = twin.metrics
        assert (m["adaptive_bpda"], m["grad_zero_fraction"], m["grad_l1_median"]) == (0, 1, 0)
        if specs[twin.key]["attack"]["name"] == "fgsm":
            assert m["robust_accuracy"] == m["clean_accuracy"]
        assert twin.key not in used


def test_adaptive_cells_store_what_the_real_defended_model_does(finished: dict[str, str]) -> None:
    """Predictions are the defended model's on the stored x_adv, so the attack cell and the
    diagonal transfer cell (M+D's examples on M+D) agree; pass counts include scoring."""
    from tasks import defenses
    from tasks.cells.worker import load_model

    db = Database.open(finished["ADVGRID_DB"])
    cells = db.cells(db.get_study("adaptive").id)
    store = ArtifactStore(finished["ADVGRID_STORE"])
    train = next(c for c in cells if c.kind == "train")
    model = load_model({"inputs": train.artifacts}, "checkpoint", store, torch.device("cpu"))
    attacks = {c.key: c for c in cells if c.kind == "attack"}
    checked = 0
    for cell in cells:
        spec = json.loads(cell.spec_json)
        if cell.kind != "transfer" or spec["defense"]["name"] == "none":
            continue
        if spec["target_defense"]["label"] != spec["defense"]["label"]:
            continue
        (source,) = [attacks[k] for k in cell.depends_on if k in attacks]
        assert cell.metrics["target_robust_accuracy"] == source.metrics["robust_accuracy"]
        assert cell.metrics["target_clean_accuracy"] == source.metrics["clean_accuracy"]
        adv, _ = store.get(source.artifacts["adversarial"])
        name, values = spec["target_defense"]["name"], spec["target_defense"]["params"]
        defended = defenses.wrap(model, name, defenses.DEFENSES.params_of(name, values))
        with torch.inference_mode():
            assert torch.equal(adv["pred_adv"], defended(adv["x_adv"]).argmax(1))
        m, n = source.metrics, 128
        assert (m["adaptive_bpda"], m["adaptive_eot"], m["grad_zero_fraction"]) == (1, 0, 0)
        assert (m["defense_randomized"], m["forward_random_fraction"]) == (0, 0)
        if spec["attack"]["name"] == "fgsm":  # one gradient, the attack's scoring, ours
            assert (m["forward"], m["backward"]) == (3 * n, n)
        checked += 1
    assert checked == 4
