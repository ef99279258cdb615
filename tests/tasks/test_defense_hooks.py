"""What a defense class carries for the cells around it: its own metrics for an attack cell
(``extra_metrics``) and the trained artifacts it needs with their recipes (``requires``)."""

from __future__ import annotations

import pytest
import torch

from tasks import datasets, models
from tasks.defenses import DEFENSES, Requirement, extra_metrics, requirement_of, wrap
from tasks.errors import TaskError

OWN_METRICS = {
    "feature_squeezing_detector",
    "randomized_smoothing",
    "vae_purify",
    "mlvgm_purify",
    "latent_projection",
}
DETECTOR = {"bits": 1, "median_size": None, "fit_size": 50}
DIGITS = {"name": "digits", "label": "digits", "params": {"eval_size": 16}}
SMOOTHING = {"sigma": 0.25, "n": 4, "n0": 4, "n_certify": 20, "radii": [0.25, 0.5]}


@pytest.fixture(scope="module")
def cell() -> tuple[torch.nn.Module, datasets.Data, datasets.Split, dict[str, torch.Tensor]]:
    """An untrained mlp on digits, and stand-ins for an attack cell's tensors."""
    params = datasets.params_of("digits", {"eval_size": 16})
    data = datasets.load("digits", params)
    split = datasets.split(len(data.y), params)
    net = models.build(
        "mlp",
        models.MODELS.params_of("mlp", {"hidden": [16]}),
        input_shape=data.input_shape,
        num_classes=10,
        mean=data.mean,
        std=data.std,
    ).eval()
    x, y = data.x[split.eval], data.y[split.eval]
    gen = torch.Generator().manual_seed(0)
    x_adv = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    with torch.no_grad():
        pred_clean, pred_adv = net(x).argmax(1), net(x_adv).argmax(1)
    tensors = {
        "x_adv": x_adv,
        "labels": y,
        "pred_clean": pred_clean,
        "pred_adv": pred_adv,
        "success": pred_adv != y,
    }
    return net, data, split, tensors


@pytest.mark.parametrize("name", sorted({"none", "jpeg", "bit_depth", "tv_min"}))
def test_defenses_without_numbers_of_their_own_add_none(name: str, cell: tuple) -> None:
    net, data, split, tensors = cell
    defended = wrap(net, name, DEFENSES.params_of(name, {}))
    component = {"name": name, "params": {}}
    assert extra_metrics(component, defended, data, split, tensors) == {}


def test_only_the_detector_smoothing_and_generative_purifiers_declare_metrics() -> None:
    base = DEFENSES.get("none").obj.extra_metrics.__func__
    declared = {e.name for e in DEFENSES if e.obj.extra_metrics.__func__ is not base}
    assert declared == OWN_METRICS


def test_the_detector_reports_under_its_prefix_and_repeats_itself(cell: tuple) -> None:
    net, data, split, tensors = cell
    name = "feature_squeezing_detector"
    defended = wrap(net, name, DEFENSES.params_of(name, DETECTOR))
    component = {"name": name, "params": DETECTOR}
    metrics = extra_metrics(component, defended, data, split, tensors)
    assert {"detector_threshold", "detector_false_positive_rate"} <= set(metrics)
    assert {"detector_detection_rate_all", "detector_n_success"} <= set(metrics)
    assert all(k.startswith("detector_") for k in metrics)
    assert metrics == extra_metrics(component, defended, data, split, tensors)


def test_smoothing_reports_certified_accuracy_at_its_radii(cell: tuple) -> None:
    net, data, split, tensors = cell
    name = "randomized_smoothing"
    defended = wrap(net, name, DEFENSES.params_of(name, SMOOTHING))
    component = {"name": name, "params": SMOOTHING}
    metrics = extra_metrics(component, defended, data, split, tensors)
    assert metrics["smoothing_n"] == 16
    assert "n" not in metrics
    assert {"certified_accuracy_r_0.25", "certified_accuracy_r_0.5"} <= set(metrics)
    assert metrics == extra_metrics(component, defended, data, split, tensors)


def test_every_built_in_requirement_has_a_recipe_the_worker_finds_again() -> None:
    needing = [e for e in DEFENSES if e.obj.requires]
    assert [e.name for e in needing] == [
        "autoencoder_purify",
        "latent_projection",
        "mlvgm_purify",
        "vae_purify",
    ]
    for entry in needing:
        params = entry.params().model_dump(mode="json")
        for role, needed in entry.obj.requires.items():
            assert needed.recipe is not None
            model = "cnn" if needed.per_model else None  # a learned α is fit per classifier
            spec = needed.train_spec(role, DIGITS, entry.name, params, model)
            assert spec.get("for_model") == model
            assert spec["model"]["name"] == needed.model
            # the owner: the purifiers that share one generator name the same one
            assert spec["train"] == {"defense": {"name": needed.owner or entry.name}}
            assert requirement_of(spec) == (role, needed)


@pytest.mark.parametrize(
    "train", [{"epochs": 1}, {"epochs": 1, "defense": {"name": "pgd_at", "params": {}}}]
)
def test_a_models_own_train_cell_builds_no_defense_artifact(train: dict) -> None:
    model = {"name": "mlp", "arch": "mlp", "params": {}}
    spec = {"kind": "train", "dataset": DIGITS, "model": model, "train": train}
    assert requirement_of(spec) is None


def test_a_requirement_without_a_recipe_has_no_train_cell() -> None:
    with pytest.raises(TaskError, match="no recipe makes the trained artifact 'denoiser'"):
        Requirement("denoiser").train_spec("denoiser", DIGITS, "autoencoder_purify", {})
