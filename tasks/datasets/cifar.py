"""``cifar10`` and ``cifar100``: Krizhevsky's tiny images, 32×32 RGB (50 000 train, 10 000 test).

The binary version (``cifar-10-batches-bin/data_batch_1.bin`` … ``data_batch_5.bin``,
``test_batch.bin``; ``cifar-100-binary/train.bin``, ``test.bin``) is a run of fixed-size
records: the label byte (CIFAR-100: two, coarse then fine) and 3072 image bytes, the 1024 red
then 1024 green then 1024 blue values of the 32×32 image, row by row. The python version
that torchvision downloads (``cifar-10-batches-py``, ``cifar-100-python``) holds the same
images in pickles, read here by their opcodes and never unpickled
(:mod:`tasks.datasets.cifar_pickle`). The binary version is preferred when both are there.

``root`` is the folder that holds ``cifar-10-batches-bin/`` (what the archive extracts to) or
that folder itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from tasks.datasets.base import DATASETS, Data, FileParams, uint8_stats
from tasks.datasets.cifar_pickle import Batch, PickleLayoutError, read_batch
from tasks.datasets.files import FileFormat, Info, MissingDataError
from tasks.errors import InputError

IMAGE_BYTES = 3 * 32 * 32


class Cifar100Params(FileParams):
    """Settings of ``cifar100``: which of its two label sets to classify."""

    labels: Literal["fine", "coarse"] = Field(
        "fine", description="fine: the 100 classes; coarse: the 20 superclasses"
    )


@dataclass(frozen=True)
class Version:
    """One published version's files: a folder, its training and test files."""

    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, *self.test)


@dataclass(frozen=True)
class Layout:
    """Where a CIFAR dataset keeps its files and how its labels are stored.

    Attributes:
        binary: The binary version's files.
        python: The python version's files.
        label_bytes: Label bytes before each binary record's image (1, or 2 for CIFAR-100).
        label_sets: Label set → (byte of a binary record, key of a python batch, classes).
    """

    binary: Version
    python: Version
    label_bytes: int
    label_sets: dict[str, tuple[int, str, int]]

    @property
    def record(self) -> int:
        return self.label_bytes + IMAGE_BYTES


CIFAR10 = Layout(
    binary=Version(
        "cifar-10-batches-bin",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        ("test_batch.bin",),
    ),
    python=Version(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",)
    ),
    label_bytes=1,
    label_sets={"labels": (0, "labels", 10)},
)
CIFAR100 = Layout(
    binary=Version("cifar-100-binary", ("train.bin",), ("test.bin",)),
    python=Version("cifar-100-python", ("train",), ("test",)),
    label_bytes=2,
    label_sets={"coarse": (0, "coarse_labels", 20), "fine": (1, "fine_labels", 100)},
)


class Cifar(FileFormat):
    """CIFAR in its binary or python version."""

    def __init__(self, name: str, layout: Layout, doc: str) -> None:
        self.name, self.layout, self.__doc__ = name, layout, doc

    def expected(self, params: FileParams) -> list[str]:
        v = self.layout.binary
        return [f"{v.folder}/{f}" for f in v.files]

    def _label_set(self, params: FileParams) -> tuple[int, str, int]:
        sets = self.layout.label_sets
        return sets[getattr(params, "labels", "labels")]

    def versions(self, root: Path) -> list[tuple[Path, Version]]:
        """The folders the files may be in, the binary version's first."""
        b, p = self.layout.binary, self.layout.python
        return [(root / b.folder, b), (root, b), (root / p.folder, p), (root, p)]

    def find(self, root: Path, params: FileParams) -> list[Path]:
        for folder, version in self.versions(root):
            if all((folder / f).is_file() for f in version.files):
                return [folder / f for f in version.files]
        for folder, version in self.versions(root):
            present = [f for f in version.files if (folder / f).is_file()]
            if (folder != root and folder.is_dir()) or present:
                missing = [f for f in version.files if f not in present]
                what = f"missing {', '.join(missing)} in {folder}"
                raise MissingDataError(self.missing_message(root, params, what))
        what = f"neither {self.layout.binary.folder}/ nor {self.layout.python.folder}/ is there"
        raise MissingDataError(self.missing_message(root, params, what))

    def files(self, params: FileParams) -> tuple[Path, list[Path]]:
        """The folder that holds the files (whichever form ``root`` takes) and the files: the
        digest names them relative to it, so both forms of ``root`` give the same key."""
        _, found = super().files(params)
        return found[0].parent, found

    def _version(self, files: list[Path]) -> Version:
        binary = files[0].name == self.layout.binary.files[0]
        return self.layout.binary if binary else self.layout.python

    def info(self, root: Path, files: list[Path], params: FileParams) -> Info:
        _, _, classes = self._label_set(params)
        version = self._version(files)
        if version is self.layout.binary:
            counts = [self._records(f) for f in files]
        else:  # a pickle says how many images it holds only once walked
            counts = [len(self._batch(f, params).data) for f in files]
        n_train = sum(counts[: len(version.train)])
        return Info(size=sum(counts), n_train=n_train, input_shape=(3, 32, 32), num_classes=classes)

    def _records(self, path: Path) -> int:
        size, record = path.stat().st_size, self.layout.record
        if size % record:
            raise InputError(
                f"{path}: truncated ({size} bytes is not a whole number of {record}-byte "
                f"records); download it again with `advgrid data download {self.name}`"
            )
        return size // record

    def _read_binary(self, path: Path, label_byte: int) -> tuple[np.ndarray, np.ndarray]:
        self._records(path)
        rec = np.fromfile(path, dtype=np.uint8).reshape(-1, self.layout.record)
        return rec[:, self.layout.label_bytes :], rec[:, label_byte]

    def _batch(self, path: Path, params: FileParams) -> Batch:
        key = self._label_set(params)[1]
        try:
            return read_batch(path, (key,))
        except PickleLayoutError as exc:
            folder = path.parent
            root = folder.parent if folder.name == self.layout.python.folder else folder
            raise PickleLayoutError(
                f"{exc}. Download the binary version instead with `advgrid data download "
                f"{self.name} --root {root}`"
            ) from None

    def read(self, root: Path, files: list[Path], params: FileParams) -> Data:
        byte, key, classes = self._label_set(params)
        version = self._version(files)
        parts = []
        for f in files:
            if version is self.layout.binary:
                parts.append(self._read_binary(f, byte))
            else:
                batch = self._batch(f, params)
                parts.append((batch.data, np.asarray(batch.labels[key], dtype=np.uint8)))
        for (_, found), f in zip(parts, files, strict=True):
            if len(found) and int(found.max()) >= classes:
                top = int(found.max())
                raise InputError(f"{f}: label {top} out of range for {classes} classes")
        images = torch.from_numpy(np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32))
        labels = torch.from_numpy(np.concatenate([p[1] for p in parts]).astype(np.int64))
        n_train = sum(len(p[1]) for p in parts[: len(version.train)])
        mean, std = uint8_stats(images[:n_train])
        return Data(x=images, y=labels, num_classes=classes, mean=mean, std=std, n_train=n_train)


DATASETS.register("cifar10", params=FileParams)(
    Cifar(
        "cifar10",
        CIFAR10,
        "CIFAR-10, 32×32 colour images of 10 classes (50 000 train, 10 000 test; binary or "
        "python version).",
    )
)
DATASETS.register("cifar100", params=Cifar100Params)(
    Cifar(
        "cifar100",
        CIFAR100,
        "CIFAR-100, 32×32 colour images of 100 classes in 20 superclasses (labels: fine | "
        "coarse; 50 000 train, 10 000 test).",
    )
)
