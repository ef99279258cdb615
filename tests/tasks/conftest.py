"""A small classifier trained once per session on scikit-learn's digits."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from tasks import datasets, models, training


@dataclass(frozen=True)
class Trained:
    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor

    @property
    def clean_accuracy(self) -> float:
        return float((training.predict(self.model, self.x) == self.y).float().mean())


@pytest.fixture(scope="session")
def trained() -> Trained:
    """small_cnn on digits, ≥ 90 % held-out accuracy; 256 evaluation samples."""
    params = datasets.params_of("digits", {"eval_size": 256})
    data = datasets.load("digits", params)
    split = datasets.split(len(data.y), params)
    net = models.build(
        "small_cnn",
        models.MODELS.params_of("small_cnn", {"width": 8}),
        input_shape=data.input_shape,
        num_classes=10,
        mean=data.mean,
        std=data.std,
        seed=0,
    )
    training.fit(
        net, data.x[split.train], data.y[split.train], training.TrainParams(epochs=15, lr=0.005)
    )
    out = Trained(net.eval(), data.x[split.eval], data.y[split.eval])
    assert out.clean_accuracy >= 0.9
    return out
