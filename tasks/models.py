"""Model architectures. Inputs live in [0, 1]; normalization happens inside the model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field
from torch import nn

from tasks.registry import Params, Registry

MODELS: Registry = Registry("model", "models")


class Normalized(nn.Module):
    """``net((x - mean) / std)``: lets attacks work in [0, 1] pixel space."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class MLPParams(Params):
    hidden: list[int] = Field(default_factory=lambda: [128], description="hidden layer widths")
    dropout: float = Field(0.0, ge=0, lt=1)


@MODELS.register("mlp")
class MLP(nn.Sequential):
    """Fully connected ReLU network over flattened pixels."""

    Params = MLPParams

    def __init__(self, params: MLPParams, input_shape: Sequence[int], num_classes: int) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(torch.tensor(input_shape).prod())
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


def build(
    arch: str,
    params: Params,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    seed: int = 0,
) -> Normalized:
    """Instantiate ``arch`` with weights initialised from ``seed``, wrapped in normalization."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MODELS.get(arch).obj(params, input_shape, num_classes)
    return Normalized(net, mean, std)
