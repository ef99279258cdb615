"""``digits``: scikit-learn's bundled 8×8 handwritten digits, offline."""

from __future__ import annotations

import numpy as np
import torch

from tasks.datasets.base import DATASETS, Data, DatasetParams, stats


@DATASETS.register("digits", params=DatasetParams)
def digits(params: DatasetParams) -> Data:
    """scikit-learn's bundled 8×8 handwritten digits (1 797 samples, 10 classes; offline)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    mean, std = stats(x)
    return Data(x=x, y=y, num_classes=10, mean=mean, std=std)
