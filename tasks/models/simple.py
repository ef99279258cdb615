"""The small architectures advgrid's tests and examples train in seconds: ``mlp``,
``small_cnn`` and the ``dae`` autoencoder that MagNet-style purification uses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from tasks.models.base import MODELS
from tasks.registry import Params


class MLPParams(Params):
    hidden: list[int] = Field(default_factory=lambda: [128], description="hidden layer widths")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each hidden layer")


@MODELS.register("mlp")
class MLP(nn.Sequential):
    """Fully connected ReLU network over flattened pixels."""

    Params = MLPParams

    def __init__(self, params: MLPParams, input_shape: Sequence[int], num_classes: int) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        # plain integers, not a tensor: the size must also be readable while building on the
        # meta device (see tasks.checkpoint_io)
        width = math.prod(int(n) for n in input_shape)
        for hidden in params.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if params.dropout:
                layers.append(nn.Dropout(params.dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class SmallCNNParams(Params):
    width: int = Field(16, ge=1, le=512, description="channels of the first conv layer")
    hidden: int = Field(64, ge=1, description="width of the dense layer")


@MODELS.register("small_cnn")
class SmallCNN(nn.Module):
    """Two 3×3 conv blocks, adaptive pooling to 4×4 and two dense layers; any image size."""

    Params = SmallCNNParams

    def __init__(
        self, params: SmallCNNParams, input_shape: Sequence[int], num_classes: int
    ) -> None:
        super().__init__()
        w, (h, wd) = params.width, tuple(input_shape[1:3])
        # a fixed-window average pool when the size allows it: the same numbers as adaptive
        # pooling, and its CUDA backward is deterministic (adaptive pooling's is not)
        pool = nn.AvgPool2d((h // 4, wd // 4)) if h % 4 == 0 and wd % 4 == 0 else None
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            pool or nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * w * 16, params.hidden),
            nn.ReLU(),
            nn.Linear(params.hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DAEParams(Params):
    """MagNet's reformer is ``width: 3, activation: sigmoid``; the defaults differ because it
    trains slowly: on digits, 30 epochs of the default recipe leave its reconstructions of
    noisy held-out inputs further from the clean ones (MSE 0.012) than the noisy inputs are
    (0.0065), where width 16 with ReLU reaches 0.004 in the same time."""

    width: int = Field(16, ge=1, le=512, description="channels of the hidden layers (MagNet: 3)")
    activation: Literal["relu", "sigmoid"] = Field(
        "relu", description="of the hidden layers (MagNet: sigmoid); the output is a sigmoid"
    )


@MODELS.register("dae")
class DAE(nn.Module):
    """Convolutional denoising autoencoder: image in, image in [0, 1] out (MagNet 2017).

    The ``autoencoder_purify`` defense's network (:mod:`tasks.defenses.purify` trains it);
    registered here with the other architectures so that a stored one loads in any process,
    whatever that process imported first.
    """

    Params = DAEParams
    part_of = "autoencoder_purify"

    def __init__(self, params: DAEParams, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        c, w = int(input_shape[0]), params.width
        act = nn.ReLU if params.activation == "relu" else nn.Sigmoid
        self.net = nn.Sequential(
            nn.Conv2d(c, w, 3, padding=1),
            act(),
            nn.Conv2d(w, w, 3, padding=1),
            act(),
            nn.Conv2d(w, c, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
