"""Datasets split deterministically; training is deterministic under a seed."""

from __future__ import annotations

import torch

from tasks import datasets, models, training


def test_split_is_seeded_and_disjoint() -> None:
    p = datasets.params_of("digits", {"eval_size": 100, "split_seed": 3})
    a, b = datasets.split(1797, p), datasets.split(1797, p)
    assert torch.equal(a.eval, b.eval)
    assert a.eval_hash == b.eval_hash
    assert len(a.eval) == 100
    assert not set(a.train.tolist()) & set(a.eval.tolist())
    other = datasets.split(1797, datasets.params_of("digits", {"eval_size": 100}))
    assert other.eval_hash != a.eval_hash


def test_synthetic_data_is_in_range_and_seeded() -> None:
    p = datasets.params_of("synthetic", {"n_samples": 50, "image_size": 4, "channels": 3})
    a, b = datasets.load("synthetic", p), datasets.load("synthetic", p)
    assert a.x.shape == (50, 3, 4, 4)
    assert torch.equal(a.x, b.x)
    assert float(a.x.min()) >= 0
    assert float(a.x.max()) <= 1


def _fit(seed: int) -> dict[str, torch.Tensor]:
    p = datasets.params_of("digits", {})
    data = datasets.load("digits", p)
    split = datasets.split(len(data.y), p)
    net = models.build(
        "mlp",
        models.MODELS.params_of("mlp", {"hidden": [32]}),
        input_shape=data.input_shape,
        num_classes=10,
        mean=data.mean,
        std=data.std,
        seed=seed,
    )
    training.fit(
        net, data.x[split.train], data.y[split.train], training.TrainParams(epochs=2, seed=seed)
    )
    return net.state_dict()


def test_training_is_deterministic_under_a_seed() -> None:
    a, b, c = _fit(0), _fit(0), _fit(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
