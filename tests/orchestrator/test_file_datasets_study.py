"""A study on datasets read from files written in their published layouts: CIFAR-10 binary
records and an ImageFolder tree decoded on demand, trained and attacked end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage import ArtifactStore, Database
from tests.conftest import Cli, data_env
from tests.tasks.datasets.writers import write_cifar_binary, write_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = """\
name: files
datasets:
  - name: cifar10
    root: {root}/cifar
    eval_size: 8
  - name: imagefolder
    root: {root}/images
    image_size: 12
    eval_size: 6
models:
  - name: mlp
    arch: mlp
    params: {{hidden: [16]}}
    train: {{epochs: 1, batch_size: 16, lr: 0.01}}
attacks:
  - name: fgsm
    eps: 0.1
execution:
  batch_size: 8
"""


def test_a_study_trains_and_attacks_on_cifar_and_an_image_folder(tmp_path: Path) -> None:
    write_cifar_binary(tmp_path / "cifar", per_batch=20, n_test=10)
    write_image_folder(tmp_path / "images" / "train", {"a": 20, "b": 20}, size=(16, 14))
    write_image_folder(tmp_path / "images" / "test", {"a": 5, "b": 5}, size=(16, 14), seed=3)
    study = tmp_path / "files.yaml"
    study.write_text(STUDY.format(root=tmp_path))
    result = Cli()("run", study, "--executor", "inline", "--no-mlflow", env=data_env(tmp_path))
    assert result.exit_code == 0, result.output
    assert "6 done, 0 failed" in result.output
    env = data_env(tmp_path)
    database = Database.open(env["ADVGRID_DB"])
    cells = database.cells(database.get_study("files").id)
    assert {c.state for c in cells} == {"done"}
    shapes = {}
    for cell in (c for c in cells if c.kind == "attack"):
        spec = json.loads(cell.spec_json)["dataset"]
        assert len(spec["digest"]) == 64
        tensors, _ = ArtifactStore(env["ADVGRID_STORE"]).get(cell.artifacts["adversarial"])
        n_train, n_eval = {"cifar10": (100, 8), "imagefolder": (40, 6)}[spec["name"]]
        assert len(tensors["indices"]) == n_eval
        assert int(tensors["indices"].min()) >= n_train  # from the official test split
        shapes[spec["name"]] = tuple(tensors["x_adv"].shape[1:])
    assert shapes == {"cifar10": (3, 32, 32), "imagefolder": (3, 12, 12)}
