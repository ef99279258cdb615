"""Adaptive evaluation end to end on digits: JPEG and bit-depth reduction attacked through
BPDA, next to their oblivious numbers, and `advgrid defenses` over the result."""

from __future__ import annotations

import json

import pytest
import torch

from storage import ArtifactStore, Database
from tests.conftest import Cli, data_env

torch.set_num_threads(1)

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
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("adaptive")
    env = data_env(root)
    (root / "adaptive.yaml").write_text(STUDY)
    result = Cli()("run", root / "adaptive.yaml", "--executor", "inline", "-q", env=env)
    assert result.exit_code == 0, result.output
    return env


@pytest.fixture(scope="module")
def table(finished: dict[str, str]) -> dict[tuple[str, str], dict]:
    out = Cli()("defenses", "adaptive", "--format", "json", env=finished)
    assert out.exit_code == 0, out.output
    return {(r["model"], r["attack"]): r for r in json.loads(out.output)}


def test_the_shape_of_an_adaptive_evaluation_on_digits(table: dict) -> None:
    """Measured (mlp, 128 samples, eps 0.12; fgsm / pgd-10 robust accuracy %): undefended
    white-box 49.2 / 43.8; jpeg oblivious 50.8 / 46.1, BPDA 49.2 / 48.4; bit depth 2
    oblivious 70.3 / 68.0, BPDA 71.9 / 68.0; clean 96.9 (jpeg), 96.1 (bits).

    Bit-depth reduction looks robust to an attack that ignores it (well above the undefended
    white-box number). On 8×8 digits that robustness is not an artefact, though: at this
    budget most pixels cannot cross a rounding threshold at all, so BPDA takes away no more
    than the transfer attack did (the gap is within a few samples), and JPEG on one 8×8 block
    barely changes an L∞ perturbation. What must hold: BPDA attacks the defended model at
    least as well as the oblivious transfer, and far below its clean accuracy (a BPDA that
    lost its gradient would leave the inputs where they were).
    """
    for attack in ("fgsm", "pgd"):
        white_box = table[("mlp", attack)]["adaptive_robust_accuracy"]
        bits = table[("mlp+bits2", attack)]
        assert bits["oblivious_robust_accuracy"] >= white_box + 0.15
        for model in ("mlp+jpeg", "mlp+bits2"):
            row = table[(model, attack)]
            assert row["adaptive"] == "bpda"
            assert row["adaptive_robust_accuracy"] <= row["oblivious_robust_accuracy"] + 0.08
            assert row["adaptive_robust_accuracy"] <= row["clean_accuracy"] - 0.15
            assert row["gap"] == pytest.approx(
                row["oblivious_robust_accuracy"] - row["adaptive_robust_accuracy"]
            )
    # nothing here masks gradients: BPDA gradients, one budget, no randomness
    assert all(r["flags"] == [] for r in table.values())


def test_the_table_shows_the_three_numbers(finished: dict[str, str], table: dict) -> None:
    out = Cli()("defenses", "adaptive", "--attack", "pgd", env=finished)
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if "mlp+bits2" in line]
    row = table[("mlp+bits2", "pgd")]
    numbers = [
        f"{row[k] * 100:.1f}"
        for k in ("clean_accuracy", "oblivious_robust_accuracy", "adaptive_robust_accuracy")
    ]
    assert len(lines) == 1
    assert "bpda" in lines[0]
    assert all(n in lines[0] for n in numbers)
    assert f"{row['gap'] * 100:+.1f}" in lines[0]


def test_adaptive_cells_store_what_the_real_defended_model_does(finished: dict[str, str]) -> None:
    """Predictions are the defended model's on the stored x_adv, so the attack cell and the
    diagonal transfer cell (M+D's examples on M+D) agree; pass counts include scoring."""
    from tasks import defenses
    from tasks.cells import _model

    db = Database.open(finished["ADVGRID_DB"])
    cells = db.cells(db.get_study("adaptive").id)
    store = ArtifactStore(finished["ADVGRID_STORE"])
    train = next(c for c in cells if c.kind == "train")
    model = _model({"inputs": train.artifacts}, "checkpoint", store, torch.device("cpu"))
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
