"""Datasets: the registry and shapes (:mod:`tasks.datasets.base`) and one module per format.

Importing this package registers every built-in dataset in :data:`DATASETS`; a new format is
one module here and its line below.
"""

from tasks.datasets import cifar, digits, idx, imagefolder, svhn, synthetic  # noqa: F401  (registration)
from tasks.datasets.base import (
    DATASETS,
    Data,
    DatasetParams,
    FileParams,
    ImageSource,
    Split,
    load,
    params_of,
    split,
    stats,
    to_float,
    train_part,
    uint8_stats,
)
from tasks.datasets.files import (
    FileFormat,
    Info,
    MissingDataError,
    describe,
    normalization_stats,
)

__all__ = [
    "DATASETS",
    "Data",
    "DatasetParams",
    "FileFormat",
    "FileParams",
    "ImageSource",
    "Info",
    "MissingDataError",
    "Split",
    "describe",
    "normalization_stats",
    "load",
    "params_of",
    "split",
    "stats",
    "to_float",
    "train_part",
    "uint8_stats",
]
