"""Training defenses in study files: validation with places, normalized params in train cell
keys (recipes without one keep theirs), a run that trains with one, and `advgrid list`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from orchestrator.errors import ConfigError
from orchestrator.report import environment
from orchestrator.study import loader
from orchestrator.study.plan import expand
from storage import ArtifactStore, Database
from tasks import datasets, models, training
from tasks.defenses import DEFENSES
from tasks.train_defenses import TRAINING_DEFENSES
from tests.conftest import TINY_STUDY, Cli, data_env

BASE = TINY_STUDY.format(name="t", lease=60)
CNN_TRAIN = "    train: {epochs: 10, lr: 0.005, seed: 0}\n"  # line 13: models[1].train


def _with_defense(defense: str) -> str:
    recipe = f"    train: {{epochs: 10, lr: 0.005, seed: 0, defense: {defense}}}\n"
    return BASE.replace(CNN_TRAIN, recipe)


def _train_cells(text: str) -> dict[str, tuple[str, dict]]:
    """Model name → (key, spec) of each train cell."""
    cells = expand(loader.parse(text, "study.yaml")).cells
    return {c.spec["model"]["name"]: (c.key, c.spec) for c in cells if c.kind == "train"}


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loader.parse(text, "study.yaml")
    return info.value.problems


def test_defense_params_enter_the_train_spec_normalized() -> None:
    cells = _train_cells(_with_defense("{name: pgd_at, eps: 0.1}"))
    assert cells["cnn"][1]["train"]["defense"] == {
        "name": "pgd_at",
        "eps": 0.1,
        "steps": 7,
        "step_size": pytest.approx(2.5 * 0.1 / 7),
        "random_start": True,
        "norm": "linf",
    }
    assert "defense" not in cells["mlp"][1]["train"]


def test_recipes_without_a_defense_keep_their_keys() -> None:
    assert set(training.TrainParams().model_dump(mode="json")) == {
        "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "seed",
    }  # fmt: skip
    plain, defended = _train_cells(BASE), _train_cells(_with_defense("{name: fast_at}"))
    assert plain["mlp"][0] == defended["mlp"][0]
    assert plain["mlp2"][0] == defended["mlp2"][0]
    assert plain["cnn"][0] != defended["cnn"][0]
    no_defense = _train_cells(_with_defense("null"))
    assert no_defense["cnn"][0] == plain["cnn"][0]


def test_defaults_written_or_left_out_give_one_key() -> None:
    short = _train_cells(_with_defense("{name: pgd_at, eps: 0.1}"))["cnn"][0]
    spelled = _with_defense("{name: pgd_at, eps: 1/10, steps: 7, random_start: true, norm: linf}")
    assert _train_cells(spelled)["cnn"][0] == short
    assert _train_cells(_with_defense("{name: pgd_at, eps: 0.2}"))["cnn"][0] != short
    bare = _train_cells(_with_defense("fast_at"))["cnn"][0]
    assert bare == _train_cells(_with_defense("{name: fast_at}"))["cnn"][0]


@pytest.mark.parametrize(
    ("defense", "expected"),
    [
        (
            "{name: pgd_att, eps: 0.1}",
            "line 13: models[1].train.defense.name: unknown training defense 'pgd_att'; "
            "did you mean 'pgd_at', 'gat'? Run `advgrid list defenses` to see all names.",
        ),
        (
            "{name: pgd_at, eps: -1}",
            "line 13: models[1].train.defense.eps: must be > 0 (got -1)",
        ),
        (
            "{name: pgd_at, stepz: 3}",
            "line 13: models[1].train.defense.stepz: unknown key 'stepz'; did you mean 'steps'? "
            "allowed keys: eps, norm, random_start, step_size, steps",
        ),
        (
            "{name: kurakin_at, lam: 0}",
            "line 13: models[1].train.defense.lam: must be > 0 (got 0)",
        ),
        (
            "{eps: 0.1}",
            "line 13: models[1].train.defense.name: required key is missing (got {'eps': 0.1})",
        ),
        (
            "{name: none}",
            "line 13: models[1].train.defense.name: 'none' is an inference-time defense, not a "
            "training one; list it under the study's `defenses:` instead",
        ),
        (
            "3",
            "line 13: models[1].train.defense: expected a training defense: a mapping such as "
            "{name: pgd_at, eps: 0.1}, or just its name (got 3)",
        ),
    ],
)
def test_errors_name_the_place(defense: str, expected: str) -> None:
    assert _problems(_with_defense(defense)) == [expected]


def test_a_training_defense_on_the_defenses_axis_is_refused_with_the_fix() -> None:
    problems = _problems(BASE + "defenses:\n  - name: none\n  - name: trades\n")
    assert problems == [
        "line 29: defenses[1].name: 'trades' is a training defense; name it in a model's "
        "recipe, `train: {defense: {name: trades}}`, instead"
    ]


def test_errors_in_block_style_recipes_name_their_line() -> None:
    recipe = (
        "    train:\n      epochs: 10\n      defense:\n        name: trades\n        beta: -1\n"
    )
    problems = _problems(BASE.replace(CNN_TRAIN, recipe))
    assert problems == ["line 17: models[1].train.defense.beta: must be ≥ 0 (got -1)"]


SMALL = """\
name: robust
datasets:
  - name: digits
    eval_size: 32
models:
  - name: cnn
    arch: small_cnn
    params: {width: 4, hidden: 16}
    train: {epochs: 2, lr: 0.005, seed: 0, defense: {name: pgd_at, eps: 0.1, steps: 2}}
attacks:
  - name: fgsm
    eps: 0.1
execution:
  batch_size: 32
"""


def _fit(recipe: training.TrainParams, meta: dict) -> dict[str, torch.Tensor]:
    params = datasets.params_of("digits", meta["dataset"]["params"])
    data = datasets.load("digits", params)
    train = datasets.split(len(data.y), params).train
    net = models.build(
        meta["arch"],
        models.params_of(meta["arch"], meta["params"]),
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        mean=data.mean,
        std=data.std,
        seed=recipe.seed,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the cell ran: one CPU, so the same float reduction order
    try:
        training.fit(net, data.x[train], data.y[train], recipe)
    finally:
        torch.set_num_threads(threads)
    return net.state_dict()


def test_a_run_trains_with_the_recipes_defense(tmp_path: Path) -> None:
    env = data_env(tmp_path)
    (tmp_path / "robust.yaml").write_text(SMALL)
    result = Cli()(
        "run", tmp_path / "robust.yaml", "--executor", "inline", "--no-mlflow", "-q", env=env
    )
    assert result.exit_code == 0, result.output
    db, store = Database.open(env["ADVGRID_DB"]), ArtifactStore(env["ADVGRID_STORE"])
    (cell,) = db.cells(db.get_study("robust").id, kind="train")
    tensors, meta = store.get(cell.artifacts["checkpoint"])
    assert meta["train"]["defense"]["name"] == "pgd_at"
    assert meta["train"]["defense"]["step_size"] == pytest.approx(0.125)
    recipe = training.TrainParams(**meta["train"])
    expected = _fit(recipe, meta)
    assert all(torch.equal(tensors[k], expected[k]) for k in expected)
    plain = _fit(recipe.model_copy(update={"defense": None}), meta)
    assert not all(torch.equal(tensors[k], plain[k]) for k in plain)
    rows = Cli()("results", "robust", "--kind", "train", "--format", "json", env=env)
    (row,) = json.loads(rows.output)
    assert row["defense"] == "pgd_at"  # the train cell's defense column names it
    (weights,) = environment.checkpoints(db.cells(db.get_study("robust").id))
    assert weights.origin == "trained (pgd_at)"  # as the report's weights table shows it


def test_list_defenses_shows_both_stages(cli) -> None:
    result = cli("list", "defenses", "--format", "json")
    assert result.exit_code == 0
    entries = {e["name"]: e for e in json.loads(result.output)}
    training_names = set(TRAINING_DEFENSES.names())
    assert training_names == {
        "fgsm_at", "kurakin_at", "pgd_at", "trades", "fast_at", "shared_at", "gaussian_augment",
        "gat",
    }  # fmt: skip
    assert {n for n, e in entries.items() if e["stage"] == "training"} == training_names
    assert {n for n, e in entries.items() if e["stage"] == "inference"} == set(DEFENSES.names())
    assert entries["pgd_at"]["summary"].startswith("PGD adversarial training")
    assert entries["pgd_at"]["params"]["properties"]["steps"]["default"] == 7
    table = cli("list", "defenses").output
    for name in training_names:
        assert f" {name} " in table
    assert " training " in table
    assert " inference " in table
    assert "steps=7" in table
    attacks = json.loads(cli("list", "attacks", "--format", "json").output)
    assert all("stage" not in e for e in attacks)  # only defenses come in stages
