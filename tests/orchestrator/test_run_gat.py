"""gat end to end on digits: the classifier's train cell depends on the generator cell it
shares with a purifier of the same recipe; a level the generator lacks is refused."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Cli, RunStudy

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = """\
name: gat
datasets:
  - name: digits
    eval_size: 48
models:
  - name: cnn
    arch: small_cnn
    train: {epochs: 4, lr: 0.003, seed: 0}
  - name: cnn_gat
    arch: small_cnn
    train: {epochs: 4, lr: 0.003, seed: 0,
            defense: {name: gat, generator: {width: 16, epochs: 4}, levels: coarse, steps: 2}}
defenses:
  - name: none
  - {name: vae_purify, generator: {width: 16, epochs: 4}, models: [cnn]}
attacks:
  - {name: pgd, norm: l2, eps: 1.0, steps: 5}
execution:
  batch_size: 48
"""


@pytest.fixture(scope="module")
def rows(run_study: RunStudy) -> list[dict]:
    env = run_study(STUDY, "-q", "--no-mlflow", file="gat.yaml").env
    out = Cli()("results", "gat", "--format", "json", env=env)
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def test_the_gat_model_trains_on_the_shared_generator(rows: list[dict]) -> None:
    assert all(r["state"] == "done" for r in rows)
    trains = {r["model"]: r for r in rows if r["kind"] == "train"}
    assert set(trains) == {"cnn", "cnn_gat", "generator"}  # one generator for both uses
    assert trains["generator"]["defense"] == "mlvgm_purify"
    gat = trains["cnn_gat"]
    assert gat["defense"] == "gat"
    assert 0 < gat["metrics"]["eval_accuracy"] <= 1
    attacks = {(r["model"], r["defense"]) for r in rows if r["kind"] == "attack"}
    assert attacks == {("cnn", "none"), ("cnn_gat", "none"), ("cnn", "vae_purify")}


def test_the_plan_makes_the_generator_an_input_of_the_gat_cell(tmp_path) -> None:
    from orchestrator.study import loader
    from orchestrator.study.plan import expand

    study = tmp_path / "gat.yaml"
    study.write_text(STUDY)
    trains = {
        c.spec["model"]["name"]: c for c in expand(loader.load(study)).cells if c.kind == "train"
    }
    assert set(trains) == {"cnn", "cnn_gat", "generator"}
    assert trains["cnn_gat"].depends_on == (trains["generator"].key,)
    assert trains["cnn_gat"].inputs == {"vae": ("cell", trains["generator"].key, "checkpoint")}
    assert trains["cnn"].depends_on == ()
    # the generator's recipe is gat's `generator:` part, the one the purifier names
    assert trains["generator"].spec["vae"]["width"] == 16


@pytest.mark.parametrize(
    ("defense", "message"),
    [
        ("{name: gat, levels: [5]}", "levels [5] do not name distinct levels"),
        ("{name: gat, generator: {levels: 2}, levels: middle}", "at least 3 levels"),
    ],
)
def test_a_level_the_generator_lacks_is_refused_with_the_line(
    tmp_path, defense: str, message: str
) -> None:
    text = STUDY.replace(
        "defense: {name: gat, generator: {width: 16, epochs: 4}, levels: coarse, steps: 2}}",
        f"defense: {defense}}}",
    )
    study = tmp_path / "bad.yaml"
    study.write_text(text)
    out = Cli()("run", study, "--dry-run")
    assert out.exit_code != 0
    assert message in out.output
    assert "bad.yaml: line 12: models[1].train.defense" in out.output
