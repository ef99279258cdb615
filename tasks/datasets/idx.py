"""``mnist`` and ``fashion_mnist``: the idx files of LeCun et al. and Zalando, gzipped or not.

The four files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``) hold a
big-endian header (magic ``0x00000803`` for images, ``0x00000801`` for labels, then the
dimensions) and raw uint8 data. The training split's 60 000 samples come first, then the
test split's 10 000.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
import torch

from tasks.datasets.base import DATASETS, Data, FileParams, uint8_stats
from tasks.datasets.files import FileFormat, Info, MissingDataError
from tasks.errors import InputError

IMAGES, LABELS = 0x00000803, 0x00000801
_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _open(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return cast(BinaryIO, gzip.GzipFile(path, "rb"))
    return path.open("rb")


def read_header(path: Path) -> tuple[int, tuple[int, ...]]:
    """The magic number and dimensions of an idx file (reads only its header)."""
    with _open(path) as fh:
        head = fh.read(4)
        if len(head) < 4 or head[:2] != b"\0\0":
            raise InputError(f"{path}: not an idx file (bad magic number {head.hex()!r})")
        ndim = head[3]
        dims = struct.unpack(f">{ndim}I", fh.read(4 * ndim))
    return int.from_bytes(head, "big"), tuple(int(d) for d in dims)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of an idx file whose magic number must be ``magic``."""
    found, dims = read_header(path)
    if found != magic:
        raise InputError(f"{path}: magic number {found:#010x}, expected {magic:#010x}")
    with _open(path) as fh:
        fh.seek(4 + 4 * len(dims))
        raw = fh.read()
    n = int(np.prod(dims))
    if len(raw) < n:
        raise InputError(
            f"{path}: truncated ({len(raw)} bytes of data, the header says {n}); download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=n).reshape(dims)


class Idx(FileFormat):
    """Images and labels in idx files, gzipped or not."""

    def __init__(self, name: str, doc: str, system_roots: tuple[str, ...] = ()) -> None:
        self.name, self.__doc__, self.system_roots = name, doc, system_roots

    def expected(self, params: FileParams) -> list[str]:
        return [f"{stem}[.gz]" for stem in _STEMS]

    def find(self, root: Path, params: FileParams) -> list[Path]:
        found, missing = [], []
        for stem in _STEMS:
            hit = next((root / n for n in (stem, stem + ".gz") if (root / n).is_file()), None)
            if hit is None:
                missing.append(stem)
            else:
                found.append(hit)
        if missing:
            raise MissingDataError(
                self.missing_message(root, params, f"missing {', '.join(missing)}")
            )
        return found

    def info(self, root: Path, files: list[Path], params: FileParams) -> Info:
        (_, train), (_, test) = read_header(files[0]), read_header(files[2])
        return Info(
            size=train[0] + test[0], n_train=train[0], input_shape=(1, *train[1:]), num_classes=10
        )

    def read(self, root: Path, files: list[Path], params: FileParams) -> Data:
        xs = [read_idx(files[i], IMAGES) for i in (0, 2)]
        ys = [read_idx(files[i], LABELS) for i in (1, 3)]
        for x, y, f in zip(xs, ys, (files[0], files[2]), strict=True):
            if len(x) != len(y):
                raise InputError(f"{f}: {len(x)} images but {len(y)} labels in its label file")
        images = torch.from_numpy(np.concatenate(xs)).unsqueeze(1)
        labels = torch.from_numpy(np.concatenate(ys).astype(np.int64))
        n_train = len(xs[0])
        mean, std = uint8_stats(images[:n_train])
        return Data(x=images, y=labels, num_classes=10, mean=mean, std=std, n_train=n_train)


DATASETS.register("mnist", params=FileParams)(
    Idx("mnist", "MNIST handwritten digits, 28×28 grey (60 000 train, 10 000 test; idx files).")
)
DATASETS.register("fashion_mnist", params=FileParams)(
    Idx(
        "fashion_mnist",
        "Zalando's Fashion-MNIST, 28×28 grey clothing (60 000 train, 10 000 test; idx files).",
        system_roots=("/usr/share/datasets/fashion-mnist",),
    )
)
