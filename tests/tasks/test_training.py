"""Datasets split deterministically; training is deterministic under a seed."""

from __future__ import annotations

import re

import pytest
import torch

from tasks import datasets, models, training
from tasks.errors import InputError


def test_split_is_seeded_and_disjoint() -> None:
    p = datasets.params_of("digits", {"eval_size": 100, "split_seed": 3})
    a, b = datasets.split(1797, p), datasets.split(1797, p)
    assert torch.equal(a.eval, b.eval)
    assert a.eval_hash == b.eval_hash
    assert len(a.eval) == 100
    assert not set(a.train.tolist()) & set(a.eval.tolist())
    other = datasets.split(1797, datasets.params_of("digits", {"eval_size": 100}))
    assert other.eval_hash != a.eval_hash


def test_train_parts_are_disjoint_cover_the_training_part_and_are_seeded() -> None:
    p = datasets.params_of("digits", {"split_seed": 3})
    split = datasets.split(1797, p)
    parts = [datasets.train_part(split, i, 5, seed=3) for i in range(5)]
    assert sorted(len(part) for part in parts) == [269] * 2 + [270] * 3  # 1348 = 5 × 269.6
    assert torch.equal(torch.cat(parts).sort().values, split.train)  # disjoint and covering
    assert all(torch.equal(part, part.sort().values) for part in parts)
    assert torch.equal(datasets.train_part(split, 2, 5, seed=3), parts[2])
    assert not torch.equal(datasets.train_part(split, 2, 5, seed=4), parts[2])
    assert not torch.equal(parts[0], split.train[: len(parts[0])])  # shuffled, not cut in order


@pytest.mark.parametrize(
    ("index", "of", "message"),
    [
        (3, 3, "part index 3 is out of range for 3 parts (0 to 2)"),
        (-1, 3, "part index -1 is out of range for 3 parts (0 to 2)"),
        (0, 8, "cannot cut 7 training samples into 8 non-empty parts"),
    ],
)
def test_train_part_refuses_impossible_parts(index: int, of: int, message: str) -> None:
    split = datasets.split(10, datasets.params_of("digits", {"eval_fraction": 0.3}))
    with pytest.raises(InputError, match=re.escape(message)):
        datasets.train_part(split, index, of, seed=0)


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
