"""PreActResNet-18 (He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016), in
the CIFAR variant that fast adversarial training (Wong et al. 2020) and robust overfitting
(Rice et al. 2020) made common.

Parameter names follow RobustBench's ``PreActResNet``: ``conv1`` (the stem, no batch norm),
``layer1`` … ``layer4`` of blocks with ``bn1``, ``conv1``, ``bn2``, ``conv2`` and, where the
shape changes, ``shortcut.0`` (a 1×1 conv), then ``bn`` (only with ``bn_before_fc``) and the
classifier ``linear``. Convolutions have no bias.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from tasks.models.base import MODELS
from tasks.registry import Params


class PreActResNetParams(Params):
    """The two variants RobustBench's PreActResNet-18 checkpoints come in."""

    bn_before_fc: bool = Field(
        False,
        description="a batch norm and ReLU after the last stage, named `bn` (Rice et al. 2020's "
        "L2 model and Kireev et al. 2021 have it; Wong et al. 2020 does not)",
    )
    shortcut_from: Literal["input", "activation"] = Field(
        "input",
        description="what a projection shortcut convolves: the block's input (RobustBench's "
        "PreActBlock) or its pre-activation, BN-ReLU of the input (PreActBlockV2, with "
        "`bn_before_fc`); blocks without a projection add their input either way",
    )


class PreActBlock(nn.Module):
    """BN-ReLU-conv twice, added to the input (or to its projection)."""

    def __init__(self, in_planes: int, planes: int, stride: int, from_activation: bool) -> None:
        super().__init__()
        self.from_activation = from_activation
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        source = out if self.from_activation else x
        skip = x if self.shortcut is None else self.shortcut(source)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + skip


def _stage(in_planes: int, planes: int, stride: int, from_activation: bool) -> nn.Sequential:
    """Two blocks, the first with ``stride``."""
    return nn.Sequential(
        PreActBlock(in_planes, planes, stride, from_activation),
        PreActBlock(planes, planes, 1, from_activation),
    )


@MODELS.register("preact_resnet18")
class PreActResNet18(nn.Module):
    """PreActResNet-18, CIFAR variant (11.2M parameters for 10 classes)."""

    Params = PreActResNetParams

    def __init__(
        self, params: PreActResNetParams, input_shape: Sequence[int], num_classes: int
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(int(input_shape[0]), 64, 3, stride=1, padding=1, bias=False)
        act = params.shortcut_from == "activation"
        self.layer1 = _stage(64, 64, 1, act)
        self.layer2 = _stage(64, 128, 2, act)
        self.layer3 = _stage(128, 256, 2, act)
        self.layer4 = _stage(256, 512, 2, act)
        self.bn = nn.BatchNorm2d(512) if params.bn_before_fc else None
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        if self.bn is not None:
            out = F.relu(self.bn(out))
        return self.linear(out.mean(dim=(2, 3)))
