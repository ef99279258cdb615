"""Generative adversarial training: params, the latent-space examples and training with them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from tasks import datasets, models, training
from tasks.defenses.generator import GeneratorParams, build_generator, fit_generator
from tasks.defenses.mlvgm import purify
from tasks.errors import TaskError
from tasks.gat import GAT, GATParams
from tasks.models.generative import network
from tasks.train_defenses import TRAINING_DEFENSES

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = GeneratorParams(width=16, epochs=8)


@pytest.fixture(scope="module")
def setup() -> tuple[torch.nn.Module, torch.nn.Module, datasets.Data, datasets.Split]:
    params = datasets.params_of("digits", {})
    data = datasets.load("digits", params)
    split = datasets.split(len(data.y), params)
    vae = build_generator(RECIPE, data)
    fit_generator(vae, data, split.train, RECIPE)
    clf = models.build(
        "small_cnn",
        models.MODELS.params_of("small_cnn", {}),
        input_shape=data.input_shape,
        num_classes=10,
        mean=data.mean,
        std=data.std,
    )
    training.fit(clf, data.x, data.y, training.TrainParams(epochs=5, lr=3e-3), indices=split.train)
    return vae.eval(), clf.eval(), data, split


def test_levels_name_the_generators_levels() -> None:
    assert GATParams(levels="coarse").indices() == [0]
    assert GATParams(levels="middle").indices() == [1]
    assert GATParams(levels="fine").indices() == [2]
    assert GATParams().indices() == [0, 1, 2]
    assert GATParams(levels=[2, 0]).indices() == [0, 2]
    assert GATParams(eps=0.5, steps=5).step == 0.25
    with pytest.raises(
        ValidationError, match=r"levels \[3\] do not name distinct levels .* 0 to 2"
    ):
        GATParams(levels=[3])
    with pytest.raises(ValidationError, match="'middle' needs a generator of at least 3 levels"):
        GATParams(generator={"levels": 2}, levels="middle")
    with pytest.raises(ValidationError, match="do not name distinct levels"):
        GATParams(generator={"arch": "vae"}, levels=[1])
    assert "gat" in TRAINING_DEFENSES


def test_an_offset_moves_its_level_and_the_finer_ones_only(setup) -> None:
    vae, _, data, split = setup
    net, mean, std = network(vae)
    xn = (data.images(split.eval[:8]) - mean) / std
    shapes = net.noise_shapes(8, 8, 8)
    with torch.no_grad():
        base = net.generate(xn, [0.0] * 3)
        fine = net.generate(xn, [0.0] * 3, offsets=[None, None, torch.ones(shapes[2])])
        coarse = net.generate(xn, [0.0] * 3, offsets=[torch.ones(shapes[0]), None, None])
    assert torch.equal(fine.codes[0], base.codes[0])
    assert torch.equal(fine.codes[1], base.codes[1])
    assert torch.equal(fine.codes[2], base.codes[2] + 1)
    assert not torch.allclose(fine.logits, base.logits)
    assert not torch.allclose(coarse.post_mu[1], base.post_mu[1], atol=1e-4)


def test_generated_examples_raise_the_loss_within_the_box(setup) -> None:
    vae, clf, data, split = setup
    x, y = data.images(split.eval[:64]), data.y[split.eval[:64]]
    gat = GAT(GATParams(generator=RECIPE, eps=1.0, steps=5), vae=vae)
    gen = torch.Generator().manual_seed(0)
    x_gat = gat.generated(clf, x, y, gen)
    again = gat.generated(clf, x, y, torch.Generator().manual_seed(0))
    assert torch.equal(x_gat, again)
    assert x_gat.shape == x.shape
    assert float(x_gat.min()) >= 0
    assert float(x_gat.max()) <= 1
    with torch.no_grad():
        recon = purify(vae, x, [0.0] * 3, None)
        attacked, plain = F.cross_entropy(clf(x_gat), y), F.cross_entropy(clf(recon), y)
    assert float(attacked) > float(plain) + 0.5
    assert not clf.training  # attack_mode restored the mode the model had


def test_training_with_gat_is_deterministic_and_needs_its_generator(setup) -> None:
    vae, _, data, split = setup
    recipe = training.TrainParams(
        epochs=1,
        lr=3e-3,
        defense={"name": "gat", "generator": RECIPE.model_dump(), "steps": 2},
    )

    def trained() -> torch.nn.Module:
        net = models.build(
            "mlp",
            models.MODELS.params_of("mlp", {"hidden": [32]}),
            input_shape=data.input_shape,
            num_classes=10,
            mean=data.mean,
            std=data.std,
        )
        training.fit(net, data.x, data.y, recipe, indices=split.train[:256], artifacts={"vae": vae})
        return net

    a, b = trained(), trained()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    with pytest.raises(TaskError, match="needs its trained generator"):
        training.fit(a, data.x, data.y, recipe, indices=split.train[:64])
