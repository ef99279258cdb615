"""Denoising-autoencoder purification: the autoencoder, its training and the wrapper."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from tasks import datasets, models
from tasks.defenses import DEFENSES, purify, wrap
from tasks.defenses.purify import MissingArtifactError, Purified, PurifyParams

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = PurifyParams(width=16, epochs=20, lr=1e-2)


@dataclass(frozen=True)
class Trained:
    dae: torch.nn.Module
    model: torch.nn.Module  # a random classifier: the wrapper's algebra needs no training
    data: datasets.Data
    train: torch.Tensor
    eval: torch.Tensor


@pytest.fixture(scope="module")
def trained() -> Trained:
    """The autoencoder trained on the digits' training part (≈ 1 s)."""
    params = datasets.params_of("digits", {})
    data = datasets.load("digits", params)
    split = datasets.split(len(data.y), params)
    dae = purify.build_autoencoder(
        RECIPE, input_shape=data.input_shape, mean=data.mean, std=data.std
    )
    purify.fit_autoencoder(dae, data.x[split.train], RECIPE)
    model = models.build(
        "mlp",
        models.MODELS.params_of("mlp", {"hidden": [32]}),
        input_shape=data.input_shape,
        num_classes=10,
        mean=data.mean,
        std=data.std,
        seed=0,
    )
    return Trained(dae, model.eval(), data, split.train, split.eval)


def test_the_autoencoder_maps_images_to_images() -> None:
    dae = models.build(
        "dae",
        models.MODELS.params_of("dae", {}),
        input_shape=(3, 5, 7),
        num_classes=10,
        mean=[0.5] * 3,
        std=[0.25] * 3,
    )
    with torch.no_grad():
        out = dae(torch.rand(2, 3, 5, 7))
    assert out.shape == (2, 3, 5, 7)
    assert float(out.min()) > 0  # a sigmoid, not logits
    assert float(out.max()) < 1


def test_denoises_held_out_digits(trained: Trained) -> None:
    clean = trained.data.x[trained.eval]
    gen = torch.Generator().manual_seed(5)
    noisy = (clean + RECIPE.noise * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    with torch.no_grad():
        restored = F.mse_loss(trained.dae(noisy), clean)
    # measured: 0.0039 against the noisy inputs' 0.0065
    assert float(restored) < 0.75 * float(F.mse_loss(noisy, clean))


def test_training_is_deterministic_under_a_seed(trained: Trained) -> None:
    x = trained.data.x[trained.train[:200]]
    shape, mean, std = trained.data.input_shape, trained.data.mean, trained.data.std

    def fit(seed: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        recipe = RECIPE.model_copy(update={"epochs": 2, "seed": seed})
        dae = purify.build_autoencoder(recipe, input_shape=shape, mean=mean, std=std)
        return purify.fit_autoencoder(dae, x, recipe), dae.state_dict()

    (m1, s1), (m2, s2), (_, s3) = fit(0), fit(0), fit(1)
    assert m1 == m2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)
    assert m1["noisy_mse"] > 0


def test_the_wrapper_classifies_the_reconstruction(trained: Trained) -> None:
    defended = purify.wrap_with(trained.model, trained.dae, RECIPE)
    assert isinstance(defended, Purified)
    x = trained.data.x[trained.eval[:32]]
    with torch.no_grad():
        assert torch.equal(defended(x), trained.model(trained.dae(x).clamp(0, 1)))
        assert torch.equal(defended.transform(x), trained.dae(x).clamp(0, 1))
    assert {k.split(".")[0] for k in defended.state_dict()} == {"model", "autoencoder"}


def test_gradient_matches_finite_differences(trained: Trained) -> None:
    model, dae = (m.to(torch.float64) for m in (trained.model, trained.dae))
    try:
        defended = purify.wrap_with(model, dae, RECIPE)
        gen = torch.Generator().manual_seed(1)
        x = trained.data.x[trained.eval[:4]].double()
        v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        w = torch.randn(4, 10, generator=gen, dtype=torch.float64)
        z = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((defended(z) * w).sum(), z)
        h = 1e-6
        with torch.no_grad():
            ahead, behind = defended(x + h * v), defended(x - h * v)
        difference = float(((ahead - behind) * w).sum() / (2 * h))
        assert float((grad * v).sum()) == pytest.approx(difference, rel=1e-6, abs=1e-9)
        assert bool(grad.abs().sum() > 0)
    finally:
        for m in (model, dae):
            m.to(torch.float32)  # the module fixture is shared


def test_without_its_autoencoder_the_defense_says_what_it_needs(trained: Trained) -> None:
    params = DEFENSES.params_of("autoencoder_purify", {})
    assert tuple(DEFENSES.get("autoencoder_purify").obj.requires) == ("autoencoder",)
    with pytest.raises(MissingArtifactError, match="needs its trained autoencoder.*wrap_with"):
        wrap(trained.model, "autoencoder_purify", params)
    assert params.dae_params() == models.MODELS.params_of("dae", {})
