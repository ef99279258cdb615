"""Datasets: tensors in [0, 1], deterministic splits and evaluation slices (the registry and
the shapes every format loads to; one module per format beside this one).

Every dataset loads to a :class:`Data` (``x`` float32 ``(N, C, H, W)`` in [0, 1], ``y``
int64) and is split by :func:`split` into a training part and an evaluation part with a
seeded permutation, so a study names the same samples on every machine. The sample indices
of the evaluation slice enter the cell key (by their hash), never the data itself.
:func:`train_part` cuts the training part into disjoint parts (cross-training-set models).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from pydantic import Field

from tasks.errors import InputError
from tasks.registry import Params, Registry

DATASETS: Registry = Registry("dataset", "datasets")


class DatasetParams(Params):
    """Split settings shared by every dataset."""

    eval_fraction: float = Field(0.25, gt=0, lt=1, description="share of samples held out")
    eval_size: int | None = Field(
        None, ge=1, description="evaluate on this many held-out samples (default: all)"
    )
    split_seed: int = Field(0, description="seed of the train/eval permutation")


@dataclass(frozen=True)
class Data:
    """A whole dataset in memory."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


@dataclass(frozen=True)
class Split:
    """Sample indices of the training part and of the evaluation slice."""

    train: torch.Tensor
    eval: torch.Tensor

    @property
    def eval_hash(self) -> str:
        """SHA-256 of the evaluation indices: how a slice enters a cell key."""
        return hashlib.sha256(self.eval.numpy().astype("<i8").tobytes()).hexdigest()


def stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


def split(n: int, params: DatasetParams) -> Split:
    """Seeded permutation of ``range(n)`` cut into train and evaluation indices."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(params.split_seed))
    n_eval = max(1, round(n * params.eval_fraction))
    held_out, train = perm[:n_eval], perm[n_eval:]
    if params.eval_size is not None:
        held_out = held_out[: params.eval_size]
    return Split(train=train.sort().values, eval=held_out.sort().values)


def train_part(split: Split, index: int, of: int, *, seed: int) -> torch.Tensor:
    """Part ``index`` of ``of`` disjoint parts of ``split``'s training indices, sorted.

    The training indices are shuffled by ``seed`` (the dataset's ``split_seed``) and cut into
    ``of`` parts whose sizes differ by at most one, so the parts cover the training part
    exactly and name the same samples on every machine.

    Args:
        split: the dataset's train/eval split.
        index: which part, ``0 <= index < of``.
        of: how many parts.
        seed: seed of the shuffle before the cut.

    Raises:
        InputError: when ``index`` is out of range or there are fewer samples than parts.
    """
    n = len(split.train)
    if not 0 <= index < of:
        raise InputError(f"part index {index} is out of range for {of} parts (0 to {of - 1})")
    if of > n:
        raise InputError(f"cannot cut {n} training samples into {of} non-empty parts")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return split.train[torch.tensor_split(perm, of)[index]].sort().values


def params_of(name: str, values: dict) -> DatasetParams:
    """Validated params of dataset ``name``."""
    params = DATASETS.params_of(name, values)
    assert isinstance(params, DatasetParams)
    return params


def load(name: str, params: DatasetParams) -> Data:
    """Load dataset ``name`` with already-validated ``params``."""
    return DATASETS.get(name).obj(params)
