"""ResNet-18/34/50 in the CIFAR variant (He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016): a 3×3 stride-1 stem and no max-pool, so a 32×32 image reaches the
last stage at 4×4.

Parameter names follow the layout most published CIFAR checkpoints use (RobustBench's
``ResNet``): ``conv1``, ``bn1``, ``layer1`` … ``layer4`` of blocks with ``conv1``/``bn1``,
``conv2``/``bn2`` (and ``conv3``/``bn3`` in a bottleneck), a ``shortcut`` of a 1×1 conv and
a batch norm where the shape changes, and the classifier ``linear``. Convolutions have no
bias. Such a file loads with ``strict=True``.

The stem takes any number of channels and the head averages whatever spatial size is left,
so 28×28 MNIST works too (its last stage is 4×4 as well).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tasks.models.base import MODELS
from tasks.registry import Params


class ResNetParams(Params):
    """ResNet has no options: depth is in the name (``resnet18``, ``resnet34``,
    ``resnet50``), the input's channels and the number of classes come from the data."""


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Identity (an empty ``Sequential``, no parameters) or a 1×1 conv and a batch norm."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class BasicBlock(nn.Module):
    """Two 3×3 convs with batch norm and a residual connection."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3, 1×1 expand (×4), each with batch norm, and a residual connection."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _stage(
    block: type[BasicBlock | Bottleneck], in_planes: int, planes: int, n: int, stride: int
) -> tuple[nn.Sequential, int]:
    """``n`` blocks, the first with ``stride``; and the width they leave."""
    layers = []
    for i in range(n):
        layers.append(block(in_planes, planes, stride if i == 0 else 1))
        in_planes = planes * block.expansion
    return nn.Sequential(*layers), in_planes


class ResNet(nn.Module):
    """CIFAR ResNet: a 3×3 stem, four stages of 64/128/256/512 planes, average pool, linear."""

    Params = ResNetParams

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        blocks: Sequence[int],
        input_shape: Sequence[int],
        num_classes: int,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(int(input_shape[0]), 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1, width = _stage(block, 64, 64, blocks[0], 1)
        self.layer2, width = _stage(block, width, 128, blocks[1], 2)
        self.layer3, width = _stage(block, width, 256, blocks[2], 2)
        self.layer4, width = _stage(block, width, 512, blocks[3], 2)
        self.linear = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        # the mean over space: RobustBench's 4×4 average pool on 32×32 inputs, any size here
        return self.linear(out.mean(dim=(2, 3)))


@MODELS.register("resnet18")
class ResNet18(ResNet):
    """ResNet-18, CIFAR variant (11.2M parameters for 10 classes)."""

    def __init__(self, params: ResNetParams, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__(BasicBlock, (2, 2, 2, 2), input_shape, num_classes)


@MODELS.register("resnet34")
class ResNet34(ResNet):
    """ResNet-34, CIFAR variant (21.3M parameters for 10 classes)."""

    def __init__(self, params: ResNetParams, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__(BasicBlock, (3, 4, 6, 3), input_shape, num_classes)


@MODELS.register("resnet50")
class ResNet50(ResNet):
    """ResNet-50 (bottleneck blocks), CIFAR variant (23.5M parameters for 10 classes)."""

    def __init__(self, params: ResNetParams, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__(Bottleneck, (3, 4, 6, 3), input_shape, num_classes)
