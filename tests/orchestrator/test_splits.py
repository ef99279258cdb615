"""Cross-training-set models: ``splits: K`` trains one recipe on K disjoint training parts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from orchestrator.errors import ConfigError
from orchestrator.study import loader
from orchestrator.study.plan import expand
from storage import ArtifactStore, Database
from tasks import datasets, models, training
from tests.conftest import TINY_STUDY, RunStudy

BASE = TINY_STUDY.format(name="t", lease=60)
CNN_TRAIN = "    train: {epochs: 10, lr: 0.005, seed: 0}\n"
SPLIT = BASE.replace(CNN_TRAIN, CNN_TRAIN + "    splits: 3\n")  # line 14: models[1].splits

# a small study whose one model is trained on three parts; fgsm only, 32 samples attacked
SMALL = """\
name: parts
datasets:
  - name: digits
    eval_size: 32
models:
  - name: cnn
    arch: small_cnn
    params: {width: 8, hidden: 32}
    train: {epochs: 4, lr: 0.005, seed: 0}
    splits: 3
attacks:
  - name: fgsm
    eps: 0.1
execution:
  batch_size: 32
"""


def _problems(text: str, source: str = "study.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        loader.parse(text, source)
    return info.value.problems


def _keys_digest(text: str) -> str:
    return hashlib.sha256(
        "".join(c.key for c in expand(loader.parse(text)).cells).encode()
    ).hexdigest()


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("splits: 3", "splits: 1", "line 14: models[1].splits: must be ≥ 2 (got 1)"),
        ("splits: 3", "splits: 27", "line 14: models[1].splits: must be ≤ 26 (got 27)"),
        (
            "  - name: mlp2\n",
            "  - name: cnn_B\n",
            "line 14: models[1].splits: the part 'cnn_B' has the name of models[2]; "
            "rename one of the two models",
        ),
        (
            "execution:\n",
            "sources: [cnn_D]\nexecution:\n",
            "line 25: sources[0]: no model named 'cnn_D' in this study; did you mean 'cnn_C'? "
            "known: mlp, cnn, cnn_A, cnn_B, cnn_C, mlp2",
        ),
    ],
)
def test_split_errors_name_the_place(old: str, new: str, expected: str) -> None:
    assert _problems(SPLIT.replace(old, new, 1)) == [expected]


def test_splits_of_a_checkpoint_are_refused(tmp_path: Path) -> None:
    (tmp_path / "w.pt").write_bytes(b"weights")
    text = SPLIT.replace(CNN_TRAIN, "    checkpoint: w.pt\n")
    assert _problems(text, str(tmp_path / "study.yaml")) == [
        "line 14: models[1].splits: splits need a `train:` recipe; a checkpoint file is one model"
    ]


def test_a_split_entry_expands_into_named_parts() -> None:
    study = loader.parse(SPLIT + "sources: [cnn_B, mlp, cnn]\ntargets: [cnn]\n")
    assert study.model_names() == ["mlp", "cnn_A", "cnn_B", "cnn_C", "mlp2"]
    assert [(p.name, p.index) for p in study.model_parts()][1:4] == [
        ("cnn_A", 0),
        ("cnn_B", 1),
        ("cnn_C", 2),
    ]
    # a base name means all its parts; a part named before keeps its place, once
    assert study.selected("sources") == ["cnn_B", "mlp", "cnn_A", "cnn_C"]
    assert study.selected("targets") == ["cnn_A", "cnn_B", "cnn_C"]
    plan = expand(study)
    assert plan.counts() == {"train": 5, "attack": 4 * 2, "transfer": 4 * 2 * 3}
    trains = {
        c.spec["model"]["name"]: c.spec.get("train_split") for c in plan.cells if c.kind == "train"
    }
    assert trains == {
        "mlp": None,
        "cnn_A": {"index": 0, "of": 3},
        "cnn_B": {"index": 1, "of": 3},
        "cnn_C": {"index": 2, "of": 3},
        "mlp2": None,
    }
    transfers = {(c.spec["source"], c.spec["target"]) for c in plan.cells if c.kind == "transfer"}
    assert ("mlp", "cnn_C") in transfers
    assert ("cnn_A", "mlp") not in transfers


def test_keys_of_studies_without_splits_do_not_change() -> None:
    # digests of every key in plan order, computed before splits existed
    assert _keys_digest(BASE) == "7a153698153bc90a5f14279e0f11f30586a12b634d74c8426be885ac256106f4"
    restricted = BASE + "sources: [cnn, mlp]\ntargets: [mlp2, cnn]\n"
    assert _keys_digest(restricted) == (
        "5f119334e19e9164a8f2492c4538439343dfc4ea52f31927a7b47a245a6da509"
    )
    plain, split = expand(loader.parse(BASE)), expand(loader.parse(SPLIT))
    unsplit = {
        c.key for c in plain.cells if c.kind == "train" and "cnn" not in c.spec["model"]["name"]
    }
    assert unsplit <= {c.key for c in split.cells}  # mlp and mlp2 keep their train cells


@pytest.fixture(scope="module")
def finished(run_study: RunStudy) -> dict[str, str]:
    return run_study(SMALL, "--no-mlflow", "-q", file="parts.yaml").env


def _checkpoints(env: dict[str, str]) -> dict[str, tuple[dict, dict]]:
    """Model name → (tensors, meta) of each trained checkpoint of the study."""
    db, store = Database.open(env["ADVGRID_DB"]), ArtifactStore(env["ADVGRID_STORE"])
    cells = db.cells(db.get_study("parts").id, kind="train")
    out = {}
    for c in cells:
        tensors, meta = store.get(c.artifacts["checkpoint"])
        out[meta["model"]] = (tensors, meta)
    return out


def test_parts_train_on_disjoint_indices(finished) -> None:
    trained = _checkpoints(finished)
    assert sorted(trained) == ["cnn_A", "cnn_B", "cnn_C"]
    params = datasets.params_of("digits", {"eval_size": 32})
    data = datasets.load("digits", params)
    split = datasets.split(len(data.y), params)
    parts = {}
    for name, (_, meta) in trained.items():
        part = meta["train_split"]
        assert part == {"index": "ABC".index(name[-1]), "of": 3}
        parts[name] = datasets.train_part(split, part["index"], 3, seed=params.split_seed)
    together = torch.cat(list(parts.values()))
    assert len(set(together.tolist())) == len(together) == len(split.train)
    # the checkpoint is what fitting the recipe on its part gives, and on no other part
    tensors, meta = trained["cnn_B"]
    assert _equal(tensors, _fit(data, parts["cnn_B"], meta))
    assert not _equal(tensors, _fit(data, parts["cnn_A"], meta))


def _fit(data: datasets.Data, indices: torch.Tensor, meta: dict) -> dict[str, torch.Tensor]:
    recipe = training.TrainParams(**meta["train"])
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
        training.fit(net, data.x[indices], data.y[indices], recipe)
    finally:
        torch.set_num_threads(threads)
    return net.state_dict()


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_transfer_matrix_has_every_part(finished, cli) -> None:
    result = cli("transfer", "parts", "--attack", "fgsm", "--format", "json", env=finished)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["sources"] == doc["targets"] == ["cnn_A", "cnn_B", "cnn_C"]
    assert [row[i] for i, row in enumerate(doc["matrix"])] == [1.0, 1.0, 1.0]
