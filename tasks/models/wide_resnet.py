"""Wide residual networks (Zagoruyko and Komodakis, "Wide Residual Networks", BMVC 2016):
WRN-28-10 and WRN-34-10 are the backbones of most robust CIFAR models (Madry et al.'s
adversarial training, TRADES, Carmon et al. 2019's unlabeled data).

Parameter names follow RobustBench's ``WideResNet`` (from the TRADES code): the stem
``conv1``, three groups ``block1`` … ``block3`` whose ``layer.N`` blocks hold ``bn1``,
``conv1``, ``bn2``, ``conv2`` and, where the width changes, ``convShortcut``; then ``bn1``
and the classifier ``fc``. Convolutions have no bias; ``fc`` has one.

Some of those checkpoints (Carmon2019Unlabeled, Zhang2019Theoretically and others trained with
the TRADES code) also hold ``sub_block1``: a second copy of ``block1`` that the network
builds but never runs. ``sub_block1: true`` builds it too, so such a file loads strictly; it
changes no output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from tasks.models.base import MODELS
from tasks.registry import Params


class WideResNetParams(Params):
    """WRN-``depth``-``widen``; the defaults are WRN-28-10."""

    depth: int = Field(28, ge=10, description="layers: 6n + 4 for n blocks per group")
    widen: int = Field(10, ge=1, le=32, description="width multiplier k (16k, 32k, 64k channels)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout between a block's two convs")
    sub_block1: bool = Field(
        False,
        description="also build the unused `sub_block1` that TRADES-code checkpoints hold "
        "(Carmon2019Unlabeled, Zhang2019Theoretically)",
    )

    @field_validator("depth")
    @classmethod
    def _six_n_plus_four(cls, depth: int) -> int:
        if (depth - 4) % 6:
            raise ValueError(f"depth must be 6n+4, e.g. 16, 28, 34 (got {depth})")
        return depth


class WideBasic(nn.Module):
    """Pre-activation block: BN-ReLU-conv, BN-ReLU-(dropout)-conv, plus the shortcut.

    Where the width or stride changes, the shortcut is a 1×1 conv of the activated input
    (and the first conv reads that too); otherwise the input is added as it came.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        # as in the reference: the shortcut depends on the width alone (widths change exactly
        # where the stride does in a WRN)
        self.convShortcut: nn.Conv2d | None = None
        if in_planes != out_planes:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.dropout:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        return out + (x if self.convShortcut is None else self.convShortcut(act))


class NetworkBlock(nn.Module):
    """One group of ``n`` blocks, kept under ``layer`` for the reference's parameter names."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, dropout: float):
        super().__init__()
        self.layer = nn.Sequential(
            *(
                WideBasic(out_planes if i else in_planes, out_planes, 1 if i else stride, dropout)
                for i in range(n)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


@MODELS.register("wide_resnet")
class WideResNet(nn.Module):
    """Wide ResNet, WRN-28-10 by default (36.5M parameters for 10 classes)."""

    Params = WideResNetParams

    def __init__(
        self, params: WideResNetParams, input_shape: Sequence[int], num_classes: int
    ) -> None:
        super().__init__()
        n, k, drop = (params.depth - 4) // 6, params.widen, params.dropout
        widths = (16, 16 * k, 32 * k, 64 * k)
        self.conv1 = nn.Conv2d(int(input_shape[0]), widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop)
        if params.sub_block1:
            self.sub_block1 = NetworkBlock(n, widths[0], widths[1], 1, drop)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(widths[3], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal convolutions (fan-out), unit batch norms, a zero classifier bias."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        # the mean over space: the reference's 8×8 average pool on 32×32 inputs, any size here
        return self.fc(out.mean(dim=(2, 3)))
