"""Datasets: the registry and shapes (:mod:`tasks.datasets.base`) and one module per format.

Importing this package registers every built-in dataset in :data:`DATASETS`; a new format is
one module here and its line below.
"""

from tasks.datasets import digits, synthetic  # noqa: F401  (registration)
from tasks.datasets.base import (
    DATASETS,
    Data,
    DatasetParams,
    Split,
    load,
    params_of,
    split,
    stats,
    train_part,
)

__all__ = [
    "DATASETS",
    "Data",
    "DatasetParams",
    "Split",
    "load",
    "params_of",
    "split",
    "stats",
    "train_part",
]
