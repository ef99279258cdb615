"""Out-of-domain evaluation: a dataset with ``models_from:`` trains nothing and attacks the
named dataset's models (with their defenses' home-trained parts) on its own test slice."""

from __future__ import annotations

import json

import pytest
import torch

from orchestrator.errors import ConfigError
from orchestrator.study import loader
from orchestrator.study.plan import expand
from storage import ArtifactStore, Database
from tasks import datasets, models
from tests.conftest import RunStudy

# The same class prototypes (same seed, classes and size), captured with more noise: the
# shifted set shares the label set and the shape, and is harder.
NOISY = """\
  - {name: synthetic, label: noisy, n_samples: 400, num_classes: 4, noise: 0.6, eval_size: 40,
     models_from: clean}
"""
STUDY = """\
name: ood
datasets:
  - {name: synthetic, label: clean, n_samples: 400, num_classes: 4, noise: 0.15, eval_size: 40}
NOISY
models:
  - name: cnn
    arch: small_cnn
    params: {width: 8, hidden: 32}
    train: {epochs: 3, lr: 0.01, seed: 0}
  - name: mlp
    arch: mlp
    params: {hidden: [32]}
    train: {epochs: 3, lr: 0.01, seed: 0}
defenses:
  - name: none
  - {name: vae_purify, generator: {arch: vae, epochs: 2, width: 8, top_dim: 4}, models: [cnn]}
attacks:
  - {name: fgsm, eps: 0.1}
execution:
  batch_size: 40
"""
HOME_ONLY = STUDY.replace("NOISY\n", "")
STUDY = STUDY.replace("NOISY\n", NOISY)


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loader.parse(text, "study.yaml")
    return info.value.problems


def test_the_shifted_dataset_trains_nothing_and_uses_the_home_parts() -> None:
    plan = expand(loader.parse(STUDY))
    home_only = expand(loader.parse(HOME_ONLY))
    trains = [c for c in plan.cells if c.kind == "train"]
    # the classifiers and the purifier's generator, each trained once, on `clean`
    assert [c.key for c in trains] == [c.key for c in home_only.cells if c.kind == "train"]
    assert {c.spec["dataset"]["label"] for c in trains} == {"clean"}
    by_key = plan.by_key()
    noisy = [c for c in plan.cells if c.kind == "attack" and c.spec["dataset"]["label"] == "noisy"]
    clean = {
        (c.spec["source"], c.spec["defense"]["label"]): c
        for c in plan.cells
        if c.kind == "attack" and c.spec["dataset"]["label"] == "clean"
    }
    # the same (model, defense) pairs, with the same checkpoints and purifier parts
    assert {(c.spec["source"], c.spec["defense"]["label"]) for c in noisy} == set(clean)
    for cell in noisy:
        twin = clean[cell.spec["source"], cell.spec["defense"]["label"]]
        assert cell.inputs == twin.inputs
        assert cell.key != twin.key
        assert all(by_key[k].spec["dataset"]["label"] == "clean" for k in cell.depends_on)
    # the in-domain cells keep the keys they have without the shifted dataset
    assert {c.key for c in home_only.cells} <= {c.key for c in plan.cells}
    transfers = [c for c in plan.cells if c.kind == "transfer"]
    assert sum(c.spec["dataset"]["label"] == "noisy" for c in transfers) == len(transfers) // 2


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "models_from: clean",
            "models_from: clen",
            "line 5: datasets[1].models_from: unknown dataset 'clen'; did you mean 'clean'? "
            "the datasets: clean, noisy",
        ),
        (
            "models_from: clean",
            "models_from: noisy",
            "line 5: datasets[1].models_from: dataset 'noisy' cannot evaluate its own models "
            "out of domain",
        ),
        (
            "models_from: clean",
            "models_from: [clean]",
            "line 5: datasets[1].models_from: expected the label of another dataset of this "
            "study (got ['clean']), such as `models_from: digits`",
        ),
        (
            "noise: 0.6, eval_size: 40,",
            "noise: 0.6, eval_size: 40, image_size: 6,",
            "line 5: datasets[1].models_from: dataset 'noisy' has images of shape (1, 6, 6), "
            "but the models of 'clean' take (1, 8, 8): out-of-domain data must have the same "
            "shape (resize or crop it to match)",
        ),
        (
            "noise: 0.6, eval_size: 40,",
            "noise: 0.6, eval_size: 40, num_classes: 5,",
            "line 5: datasets[1].models_from: dataset 'noisy' has 5 classes, but the models of "
            "'clean' predict 4: out-of-domain data must share the label set",
        ),
        (
            "    train: {epochs: 3, lr: 0.01, seed: 0}\n  - name: mlp",
            "    train: {epochs: 3, lr: 0.01, seed: 0}\n    datasets: [noisy]\n  - name: mlp",
            "line 11: models[0].datasets[0]: nothing trains on 'noisy', which evaluates the "
            "models of 'clean' out of domain (`models_from:`); list 'clean' here and the model "
            "is evaluated on both",
        ),
    ],
)
def test_bad_models_from_is_refused_with_the_line(old: str, new: str, expected: str) -> None:
    text = STUDY.replace(old, new, 1)
    if "num_classes: 5" in new:  # a second num_classes key: drop the first of that entry
        text = text.replace("num_classes: 4, noise: 0.6", "noise: 0.6")
    assert _problems(text) == [expected]


def test_a_chain_of_shifts_is_refused() -> None:
    third = "  - {name: synthetic, label: noisier, noise: 0.9, models_from: noisy}\n"
    text = STUDY.replace("models:\n", third + "models:\n", 1)
    assert _problems(text) == [
        "line 6: datasets[2].models_from: dataset 'noisy' is itself evaluated out of domain "
        "(it has `models_from:`): name the dataset its models are trained on"
    ]


@pytest.fixture(scope="module")
def finished(run_study: RunStudy) -> dict[str, str]:
    return run_study(STUDY, "--no-mlflow", "-q", file="ood.yaml").env


def test_shifted_cells_measure_the_home_models_on_the_shifted_slice(finished) -> None:
    db, store = Database.open(finished["ADVGRID_DB"]), ArtifactStore(finished["ADVGRID_STORE"])
    cells = db.cells(db.get_study("ood").id)
    specs = {c.key: json.loads(c.spec_json) for c in cells}
    assert all(c.state == "done" for c in cells)
    checkpoint = next(
        c.artifacts["checkpoint"]
        for c in cells
        if c.kind == "train" and specs[c.key]["model"]["name"] == "cnn"
    )
    tensors, meta = store.get(checkpoint)
    home_params = datasets.params_of("synthetic", STUDY_PARAMS["clean"])
    home = datasets.load("synthetic", home_params)
    assert tuple(meta["mean"]) == home.mean  # the home statistics, not the shifted ones
    net = models.build(
        meta["arch"],
        models.params_of(meta["arch"], meta["params"]),
        input_shape=tuple(meta["input_shape"]),
        num_classes=meta["num_classes"],
        mean=meta["mean"],
        std=meta["std"],
    )
    net.load_state_dict(tensors)
    net.eval()
    accuracy = {}
    for label, values in STUDY_PARAMS.items():
        params = datasets.params_of("synthetic", values)
        data = datasets.load("synthetic", params)
        split = datasets.split(len(data.y), params)
        with torch.no_grad():
            pred = net(data.x[split.eval]).argmax(1)
        accuracy[label] = float((pred == data.y[split.eval]).float().mean())
    measured = {
        specs[c.key]["dataset"]["label"]: c.metrics["clean_accuracy"]
        for c in cells
        if c.kind == "attack"
        and specs[c.key]["source"] == "cnn"
        and specs[c.key]["defense"]["name"] == "none"
    }
    assert measured == pytest.approx(accuracy, abs=1e-6)
    assert accuracy["noisy"] < accuracy["clean"]  # the shift is real on this model


STUDY_PARAMS = {
    "clean": {"n_samples": 400, "num_classes": 4, "noise": 0.15, "eval_size": 40},
    "noisy": {"n_samples": 400, "num_classes": 4, "noise": 0.6, "eval_size": 40},
}
