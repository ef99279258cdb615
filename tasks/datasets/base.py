"""Datasets: images, deterministic splits and evaluation slices (the registry and the shapes
every format loads to; one module per format beside this one).

Every dataset loads to a :class:`Data`: ``x`` holds the images ``(N, C, H, W)``, either as
uint8 (the published formats: a quarter of the memory, converted per batch by
:meth:`Data.images`) or as float32 in [0, 1] (generated and bundled data), or as a lazy
source that decodes only the samples asked for (:class:`ImageSource`); ``y`` is int64.
:func:`split` cuts it into a training part and an evaluation part: the official test split
when the format has one (``n_train``), else a seeded permutation, so a study names the same
samples on every machine. The sample indices of the evaluation slice enter the cell key (by
their hash), never the data itself. :func:`train_part` cuts the training part into disjoint
parts (cross-training-set models).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

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


class FileParams(DatasetParams):
    """Settings of a dataset read from files in its published format.

    ``root`` says where the files are; it locates the data and does not identify it, so it
    never enters a cell key (the digest of the files does, :mod:`tasks.datasets.files`).
    """

    root: str | None = Field(
        None,
        description="folder holding the files (default: $ADVGRID_DATA/NAME, else "
        "~/.advgrid/data/NAME)",
    )
    eval_split: Literal["test", "train"] = Field(
        "test",
        description="evaluate on the official test split (seeded slice of eval_size), or on "
        "a seeded eval_fraction held out of the training split",
    )


@runtime_checkable
class ImageSource(Protocol):
    """Images that are not all in memory: decoded when indexed (ImageFolder)."""

    dtype: torch.dtype

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Data:
    """A dataset: its images (in memory or decoded on demand) and labels.

    Attributes:
        x: ``(N, C, H, W)`` uint8, float32 in [0, 1], or an :class:`ImageSource`.
        y: int64 labels.
        n_train: When the format has an official split, the first ``n_train`` samples are
            its training split and the rest its test split; None otherwise.
    """

    x: torch.Tensor | ImageSource
    y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    n_train: int | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.x.shape[1:])

    def images(self, index: torch.Tensor) -> torch.Tensor:
        """The samples at ``index`` as float32 in [0, 1] (only those are converted)."""
        return to_float(self.x[index])


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [0, 1] (exactly ``x / 255``); float images as they are."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255)
    return x


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
    """Per-channel mean and standard deviation of float images, rounded to 6 places."""
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


def uint8_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], ...]:
    """:func:`stats` of uint8 images scaled to [0, 1], in chunks: never a float copy of all
    of them (a CIFAR-10 training split would be 600 MB as float32)."""
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    for part in x.split(chunk):
        v = part.to(torch.float64).div_(255)
        total += v.sum(dim=(0, 2, 3))
        squares += v.square().sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    std = ((squares - n * mean.square()) / max(n - 1, 1)).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


def split(n: int, params: DatasetParams, n_train: int | None = None) -> Split:
    """The training indices and the evaluation slice of ``n`` samples.

    Without an official split (``n_train`` None), a seeded permutation of ``range(n)`` cut
    by ``eval_fraction``. With one, the training split is ``range(n_train)`` and the
    evaluation slice a seeded draw of ``eval_size`` test samples (all of them by default);
    ``eval_split: train`` holds ``eval_fraction`` of the training split out instead and
    never touches the test split.
    """
    gen = torch.Generator().manual_seed(params.split_seed)
    if n_train is None:
        perm = torch.randperm(n, generator=gen)
        n_eval = max(1, round(n * params.eval_fraction))
        held_out, train = perm[:n_eval], perm[n_eval:]
    elif getattr(params, "eval_split", "test") == "test":
        train = torch.arange(n_train)
        held_out = n_train + torch.randperm(n - n_train, generator=gen)
    else:
        perm = torch.randperm(n_train, generator=gen)
        n_eval = max(1, round(n_train * params.eval_fraction))
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
