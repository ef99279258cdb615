"""autoencoder_purify end to end on digits: its autoencoder trained by a cell of its own,
attack and transfer cells built on it, and `advgrid defenses` over the result."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Cli, RunStudy

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = """\
name: purified
datasets:
  - name: digits
    eval_size: 64
models:
  - name: mlp
    arch: mlp
    params: {hidden: [64]}
    train: {epochs: 15, lr: 0.005, seed: 0}
defenses:
  - name: none
  - {name: autoencoder_purify, epochs: 10}
attacks:
  - name: fgsm
    eps: 0.2
execution:
  batch_size: 64
"""


@pytest.fixture(scope="module")
def finished(run_study: RunStudy) -> dict[str, str]:
    return run_study(STUDY, "-q", file="purified.yaml").env


@pytest.fixture(scope="module")
def rows(finished: dict[str, str]) -> list[dict]:
    out = Cli()("results", "purified", "--format", "json", env=finished)
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def test_every_cell_completes_and_the_autoencoder_is_a_train_row(rows: list[dict]) -> None:
    assert all(r["state"] == "done" for r in rows)
    # 2 train (mlp, autoencoder), 2 attack (mlp, mlp+purify), 2 × 2 transfer
    assert [r["kind"] for r in rows].count("train") == 2
    assert len(rows) == 2 + 2 + 4
    (coder,) = [r for r in rows if r["kind"] == "train" and r["model"] == "autoencoder"]
    assert coder["defense"] == "autoencoder_purify"
    assert coder["params"]["arch"] == "dae"
    assert coder["metrics"]["train_mse"] < coder["metrics"]["noisy_mse"]


def test_transfer_onto_the_purified_model_and_the_attack_on_it(rows: list[dict]) -> None:
    transfer = {(r["source"], r["target"]): r["metrics"] for r in rows if r["kind"] == "transfer"}
    models = ("mlp", "mlp+autoencoder_purify")
    assert set(transfer) == {(s, t) for s in models for t in models}
    onto = transfer[("mlp", "mlp+autoencoder_purify")]
    assert onto["target_clean_accuracy"] > 0.8
    attack = {r["defense"]: r["metrics"] for r in rows if r["kind"] == "attack"}
    assert attack["autoencoder_purify"]["clean_accuracy"] == onto["target_clean_accuracy"]
    assert 0 <= attack["autoencoder_purify"]["robust_accuracy"] <= 1


def test_advgrid_defenses_shows_the_purified_model(finished: dict[str, str]) -> None:
    out = Cli()("defenses", "purified", "--format", "json", env=finished)
    assert out.exit_code == 0, out.output
    table = {(r["model"], r["defense"]): r for r in json.loads(out.output)}
    row = table[("mlp+autoencoder_purify", "autoencoder_purify")]
    assert row["oblivious_robust_accuracy"] is not None
    assert row["adaptive_robust_accuracy"] is not None
    assert row["clean_accuracy"] > 0.8
