"""``svhn``: Street View House Numbers, cropped digits, 32×32 RGB (73 257 train, 26 032 test,
and 531 131 easier extra training samples).

``train_32x32.mat``, ``test_32x32.mat`` and the optional ``extra_32x32.mat`` are MATLAB v5
files holding ``X``, uint8 ``(32, 32, 3, N)`` (height, width, channel, sample), and ``y``,
``(N, 1)`` labels 1 to 10, where 10 is the digit 0. They are read with :mod:`scipy.io`; the
labels are mapped so that a label is its digit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch
from pydantic import Field

from tasks.datasets.base import DATASETS, Data, FileParams, uint8_stats
from tasks.datasets.files import FileFormat, Info, MissingDataError
from tasks.errors import InputError

TRAIN, TEST, EXTRA = "train_32x32.mat", "test_32x32.mat", "extra_32x32.mat"
# what scipy raises on a file that is not a MATLAB v5 file (v7.3 files are HDF5)
_MAT_ERRORS = (scipy.io.matlab.MatReadError, ValueError, OSError, TypeError, NotImplementedError)


class SVHNParams(FileParams):
    """Settings of ``svhn``."""

    extra: bool = Field(False, description="add the 531 131 extra samples to the training split")


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The variables of a MAT file and their shapes, read from its headers."""
    try:
        return {name: tuple(shape) for name, shape, _ in scipy.io.whosmat(str(path))}
    except _MAT_ERRORS as exc:
        raise InputError(f"{path}: not a readable MATLAB file ({exc})") from exc


def _count(path: Path) -> int:
    shapes = _shapes(path)
    x, y = shapes.get("X"), shapes.get("y")
    if x is None or y is None:
        raise InputError(f"{path}: expected variables X and y, found {sorted(shapes)}")
    if x[:3] != (32, 32, 3) or len(x) != 4 or y[0] != x[3]:
        raise InputError(f"{path}: X is {x} and y {y}, expected (32, 32, 3, N) and (N, 1)")
    return x[3]


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels 0-9 of one SVHN MAT file."""
    _count(path)
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except _MAT_ERRORS as exc:
        raise InputError(f"{path}: not a readable MATLAB file ({exc})") from exc
    x, y = mat["X"], mat["y"].reshape(-1).astype(np.int64)
    if x.dtype != np.uint8:
        raise InputError(f"{path}: X is {x.dtype}, expected uint8")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise InputError(f"{path}: labels {y.min()} to {y.max()}, expected 1 to 10")
    y[y == 10] = 0  # the published files write the digit 0 as class 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y


class SVHN(FileFormat):
    """SVHN house-number digits, 32×32 colour (73 257 train, 26 032 test, 531 131 extra)."""

    name = "svhn"

    def _names(self, params: FileParams) -> list[str]:
        return [TRAIN, *([EXTRA] if getattr(params, "extra", False) else []), TEST]

    def expected(self, params: FileParams) -> list[str]:
        return self._names(params)

    def missing_message(self, root: Path, params: FileParams, what: str) -> str:
        text = super().missing_message(root, params, what)
        if getattr(params, "extra", False):  # the download fetches the extra samples on request
            text = text.replace(f"--root {root}`", f"--root {root} --optional`")
        return text

    def find(self, root: Path, params: FileParams) -> list[Path]:
        names = self._names(params)
        missing = [n for n in names if not (root / n).is_file()]
        if missing:
            what = f"missing {', '.join(missing)}"
            raise MissingDataError(self.missing_message(root, params, what))
        return [root / n for n in names]

    def info(self, root: Path, files: list[Path], params: FileParams) -> Info:
        counts = [_count(f) for f in files]
        return Info(
            size=sum(counts), n_train=sum(counts[:-1]), input_shape=(3, 32, 32), num_classes=10
        )

    def read(self, root: Path, files: list[Path], params: FileParams) -> Data:
        parts = [read_mat(f) for f in files]
        x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        n_train = len(y) - len(parts[-1][1])
        mean, std = uint8_stats(x[:n_train])
        return Data(x=x, y=y, num_classes=10, mean=mean, std=std, n_train=n_train)


DATASETS.register("svhn", params=SVHNParams)(SVHN())
