"""Two classic small convolutional networks: LeNet-5 and the CNN of Madry et al.'s MNIST
challenge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from tasks.models.base import MODELS
from tasks.registry import Params


def _pooled(size: int, kernel: int, padding: int) -> int:
    """The side of a map after a stride-1 conv of ``kernel`` with ``padding`` and a 2×2 pool."""
    return (size + 2 * padding - kernel + 1) // 2


class LeNet5Params(Params):
    activation: Literal["relu", "tanh"] = Field(
        "relu", description="after each conv and hidden dense layer (LeCun et al. 1998: tanh)"
    )


@MODELS.register("lenet5")
class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998): conv 5×5 6, pool, conv 5×5 16, pool, dense 120, 84.

    Designed for 32×32 inputs; the first conv zero-pads a smaller image up to that size (two
    pixels a side for 28×28 MNIST, the usual way of running it there). Max pooling; any
    number of channels.
    """

    Params = LeNet5Params

    def __init__(self, params: LeNet5Params, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        c, h, w = (int(n) for n in input_shape[:3])
        pad = max(0, (32 - min(h, w) + 1) // 2)
        act = nn.ReLU if params.activation == "relu" else nn.Tanh
        h, w = _pooled(_pooled(h, 5, pad), 5, 0), _pooled(_pooled(w, 5, pad), 5, 0)
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=pad),
            act(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            act(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * h * w, 120),
            act(),
            nn.Linear(120, 84),
            act(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MadryCNNParams(Params):
    """The challenge's widths; smaller ones train faster for a quick study."""

    width: int = Field(32, ge=1, le=512, description="channels of the first conv (the second: 2×)")
    hidden: int = Field(1024, ge=1, description="width of the dense layer")


@MODELS.register("madry_cnn")
class MadryCNN(nn.Module):
    """The MNIST challenge CNN (Madry et al. 2018): 5×5 convs of 32 and 64, dense 1024.

    Conv 5×5 32, 2×2 max pool, conv 5×5 64, 2×2 max pool, dense 1024, dense classes.
    "Same" padding and 2×2 max pooling, so a 28×28 image leaves a 7×7×64 map; any size and
    number of channels works.
    """

    Params = MadryCNNParams

    def __init__(
        self, params: MadryCNNParams, input_shape: Sequence[int], num_classes: int
    ) -> None:
        super().__init__()
        c, h, w = (int(n) for n in input_shape[:3])
        width = params.width
        h, w = _pooled(_pooled(h, 5, 2), 5, 2), _pooled(_pooled(w, 5, 2), 5, 2)
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * h * w, params.hidden),
            nn.ReLU(),
            nn.Linear(params.hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
