"""A published checkpoint's normalization and expected clean accuracy, through a study: a
zoo-layout file (``module.`` prefixes, a ``state_dict`` wrapper) whose network takes
normalized inputs, given the constants it was trained with, attacks with the clean accuracy
it had; told it takes [0, 1] inputs, its attack cells fail before attacking and say why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from orchestrator.study import loader
from orchestrator.study.plan import expand
from tasks import training

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = """\
name: zoo
datasets:
  - name: digits
models:
  - name: given
    arch: mlp
    params: {{hidden: [32]}}
    checkpoint: {path}
    normalization: {normalization}
    expected_clean_accuracy: {expected}
    accuracy_tolerance: 0.005
attacks:
  - name: fgsm
    eps: 0.1
execution:
  max_attempts: 1
"""


@pytest.fixture(scope="module")
def zoo_file(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> tuple[Path, dict]:
    """An mlp trained outside advgrid, saved as a zoo saves it, and what it was trained with
    (its normalization constants, its clean accuracy on the digits' evaluation slice)."""
    model = tiny_model((32,), seed=3, epochs=5)
    state = {f"module.{k}": v for k, v in model.bare_state().items()}
    path = tmp_path_factory.mktemp("zoo") / "Someone2024Robust.pt"
    torch.save({"state_dict": state, "epoch": 5}, path)
    split, data = model.split, model.data
    pred = training.predict(model.net, data.x[split.eval])
    accuracy = float((pred == data.y[split.eval]).float().mean())
    return path, {"mean": list(data.mean), "std": list(data.std), "accuracy": accuracy}


def study_file(root: Path, path: Path, normalization: str, expected: float) -> Path:
    out = root / "zoo.yaml"
    out.write_text(STUDY.format(path=path, normalization=normalization, expected=expected))
    return out


def test_given_its_constants_the_checkpoint_attacks_with_its_own_accuracy(
    zoo_file, cli, workdir: Path
) -> None:
    path, known = zoo_file
    norm = json.dumps({"mean": known["mean"], "std": known["std"]})
    study = study_file(workdir, path, norm, known["accuracy"])
    result = cli("run", study, "--executor", "inline", "--no-mlflow")
    assert result.exit_code == 0, result.output
    rows = json.loads(cli("results", "zoo", "--format", "json").output)
    (attack,) = [r for r in rows if r["kind"] == "attack"]
    assert attack["metrics"]["checkpoint_clean_accuracy"] == pytest.approx(known["accuracy"])
    assert attack["metrics"]["clean_accuracy"] == pytest.approx(known["accuracy"])


def test_told_the_wrong_normalization_its_cells_fail_before_attacking(
    zoo_file, cli, workdir: Path
) -> None:
    path, known = zoo_file
    # constants far from the ones it was trained with: the accuracy falls apart
    study = study_file(workdir, path, "{mean: [0.9], std: [0.05]}", known["accuracy"])
    result = cli("run", study, "--executor", "inline", "--no-mlflow")
    assert result.exit_code == 1, result.output
    status = cli("status", "zoo").output
    assert "clean accuracy" in status
    assert f"expected {known['accuracy']:.4f} ± 0.0050" in status
    assert "normalization" in status


def test_normalization_enters_the_keys_only_when_it_is_not_the_datasets(
    zoo_file, tmp_path: Path
) -> None:
    path, known = zoo_file

    def keys(normalization: str | None) -> set[str]:
        text = study_file(tmp_path, path, str(normalization), known["accuracy"]).read_text()
        text = text.replace("    expected_clean_accuracy", "    # ")
        if normalization is None:  # the entry says nothing: the default
            text = text.replace("    normalization: None\n", "")
        study = tmp_path / "k.yaml"
        study.write_text(text)
        return {c.key for c in expand(loader.load(study)).cells}

    assert keys("dataset") == keys(None)
    assert keys("inside").isdisjoint(keys("dataset"))


def test_constants_of_the_wrong_length_are_refused(zoo_file, cli, workdir: Path) -> None:
    path, known = zoo_file
    study = study_file(workdir, path, "{mean: [0.5, 0.5, 0.5], std: [0.2, 0.2, 0.2]}", 0.5)
    result = cli("run", study, "--executor", "inline", "--no-mlflow")
    assert result.exit_code == 1
    assert "models[0].normalization: 3 means and 3 stds" in result.output
    assert "1 channel(s)" in result.output
