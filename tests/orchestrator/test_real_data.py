"""Studies on the real Fashion-MNIST (Debian's dataset-fashion-mnist): official splits, the
digest of the files in every cell key, and the errors of a missing dataset folder."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from orchestrator.study import loader
from orchestrator.study.plan import expand
from tests.conftest import Cli, FinishedStudy, RunStudy, data_env, need_fashion_mnist

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = """\
name: fashion
datasets:
  - name: fashion_mnist
    eval_size: 200
    {root}
models:
  - name: mlp
    arch: mlp
    params: {{hidden: [64]}}
    train: {{epochs: 1, batch_size: 128, lr: 0.002}}
attacks:
  - name: fgsm
    eps: 0.1
execution:
  batch_size: 100
"""


def study_text(root: Path | None = None) -> str:
    return STUDY.format(root=f"root: {root}" if root else "")


@pytest.fixture(scope="module")
def fashion(run_study: RunStudy) -> FinishedStudy:
    need_fashion_mnist()
    return run_study(study_text(), "--no-mlflow", file="fashion.yaml")


def test_a_study_trains_on_the_train_split_and_attacks_a_slice_of_the_test_split(
    fashion: FinishedStudy,
) -> None:
    db = fashion.db()
    study = db.get_study("fashion")
    cells = {c.kind: c for c in db.cells(study.id)}
    train, attack = cells["train"], cells["attack"]
    assert train.state == attack.state == "done"
    # one epoch of an MLP on the 60 000 training images: Fashion-MNIST's test split
    assert train.metrics["eval_accuracy"] >= 0.78, train.metrics
    assert attack.metrics["clean_accuracy"] >= 0.75, attack.metrics
    assert attack.metrics["robust_accuracy"] < attack.metrics["clean_accuracy"]
    spec = json.loads(attack.spec_json)
    assert len(spec["dataset"]["digest"]) == 64
    tensors, meta = fashion.store().get(attack.artifacts["adversarial"])
    indices = tensors["indices"]
    assert len(indices) == 200
    assert int(indices.min()) >= 60_000
    assert tensors["x_adv"].shape[1:] == (1, 28, 28)


def test_keys_follow_the_bytes_of_the_files_not_their_folder(tmp_path: Path) -> None:
    real = need_fashion_mnist()
    same = tmp_path / "same"
    shutil.copytree(real, same)
    other = tmp_path / "other"  # the same images, one test label changed
    shutil.copytree(real, other)
    labels = other / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[8] = (raw[8] + 1) % 10
    labels.unlink()
    (other / "t10k-labels-idx1-ubyte").write_bytes(bytes(raw))

    def keys(root: Path | None) -> list[str]:
        path = tmp_path / "s.yaml"
        path.write_text(study_text(root))
        return [c.key for c in expand(loader.load(path)).cells]

    assert keys(None) == keys(same)
    assert set(keys(other)).isdisjoint(keys(None))


def test_a_missing_dataset_folder_names_the_files_and_the_command(tmp_path: Path) -> None:
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    (empty / "train-images-idx3-ubyte.gz").write_bytes(b"")  # a partial download
    study = tmp_path / "s.yaml"
    study.write_text(study_text(empty).replace("fashion_mnist", "mnist"))
    result = Cli()("plan", study, env=data_env(tmp_path))
    assert result.exit_code != 0
    out = result.output
    assert "datasets[0].root" in out
    assert "t10k-images-idx3-ubyte" in out
    assert "train-labels-idx1-ubyte" in out
    assert f"advgrid data download mnist --root {empty}" in out
