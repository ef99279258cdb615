"""``synthetic``: class prototypes plus Gaussian noise, any size, generated offline."""

from __future__ import annotations

import torch
from pydantic import Field

from tasks.datasets.base import DATASETS, Data, DatasetParams, stats


class SyntheticParams(DatasetParams):
    n_samples: int = Field(1000, ge=10)
    num_classes: int = Field(4, ge=2, le=100)
    channels: int = Field(1, ge=1, le=4)
    image_size: int = Field(8, ge=2, le=256)
    noise: float = Field(0.15, ge=0)
    seed: int = 0


@DATASETS.register("synthetic", params=SyntheticParams)
def synthetic(params: SyntheticParams) -> Data:
    """Class prototypes plus Gaussian noise, clipped to [0, 1]; any size, generated offline."""
    g = torch.Generator().manual_seed(params.seed)
    shape = (params.channels, params.image_size, params.image_size)
    prototypes = torch.rand((params.num_classes, *shape), generator=g)
    y = torch.arange(params.n_samples) % params.num_classes
    y = y[torch.randperm(params.n_samples, generator=g)]
    noise = torch.randn((params.n_samples, *shape), generator=g) * params.noise
    x = (prototypes[y] + noise).clamp(0, 1)
    mean, std = stats(x)
    return Data(x=x, y=y.to(torch.int64), num_classes=params.num_classes, mean=mean, std=std)
