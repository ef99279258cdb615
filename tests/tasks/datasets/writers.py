"""Small datasets written in the exact layouts they are published in: idx (gzipped or not),
CIFAR-10/100 binary records, CIFAR python-version pickles (the opcode layout Python 2's
cPickle wrote, or Python 3's ``pickle`` at a chosen protocol), SVHN MATLAB files and
ImageFolder trees of PNG or JPEG files."""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


@dataclass(frozen=True)
class Written:
    """What a writer put in the files: images ``(N, C, H, W)`` uint8 and labels, the
    training split's samples first."""

    x: np.ndarray
    y: np.ndarray
    n_train: int


def images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def labels(n: int, classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 1).integers(0, classes, size=n, dtype=np.uint8)


# ---- idx ---------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file: magic ``0x0000 08 ndim`` (unsigned bytes), big-endian dims, the data."""
    head = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(root: Path, n_train: int = 12, n_test: int = 5, *, gz: bool = True) -> Written:
    """The four files of MNIST's layout, 28×28 grey, ``.gz`` or raw."""
    root.mkdir(parents=True, exist_ok=True)
    x = images(n_train + n_test, (28, 28), seed=0)
    y = labels(n_train + n_test, 10, seed=0)
    parts = {
        "train-images-idx3-ubyte": x[:n_train],
        "train-labels-idx1-ubyte": y[:n_train],
        "t10k-images-idx3-ubyte": x[n_train:],
        "t10k-labels-idx1-ubyte": y[n_train:],
    }
    for stem, array in parts.items():
        raw = idx_bytes(array)
        if gz:
            (root / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (root / stem).write_bytes(raw)
    return Written(x[:, None], y, n_train)


# ---- CIFAR binary ------------------------------------------------------------------------


@dataclass(frozen=True)
class CifarLayout:
    """The published file names of one CIFAR version."""

    binary: str
    train: tuple[str, ...]
    test: str
    python: str
    py_train: tuple[str, ...]
    py_test: str
    label_bytes: int


CIFAR10 = CifarLayout(
    "cifar-10-batches-bin",
    tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test_batch.bin",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch",
    1,
)
CIFAR100 = CifarLayout(
    "cifar-100-binary", ("train.bin",), "test.bin", "cifar-100-python", ("train",), "test", 2
)


def cifar_samples(layout: CifarLayout, per_batch: int, n_test: int) -> tuple[np.ndarray, ...]:
    """Images ``(N, 3, 32, 32)`` and label columns ``(N, label_bytes)``: CIFAR-100's coarse
    label then fine label (fine // 5 as coarse, so the two differ)."""
    n = per_batch * len(layout.train) + n_test
    x = images(n, (3, 32, 32), seed=3)
    if layout.label_bytes == 1:
        return x, labels(n, 10, seed=3)[:, None]
    fine = labels(n, 100, seed=3)
    return x, np.stack([fine // 5, fine], axis=1)


def write_cifar_binary(
    root: Path, layout: CifarLayout = CIFAR10, per_batch: int = 4, n_test: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """``root/<binary folder>/…``: records of the label byte(s) then 3072 image bytes (1024
    R, 1024 G, 1024 B, each row-major 32×32). Returns the images and label columns."""
    x, y = cifar_samples(layout, per_batch, n_test)
    folder = root / layout.binary
    folder.mkdir(parents=True, exist_ok=True)
    records = np.concatenate([y.astype(np.uint8), x.reshape(len(x), 3072)], axis=1)
    for i, name in enumerate(layout.train):
        (folder / name).write_bytes(records[i * per_batch : (i + 1) * per_batch].tobytes())
    (folder / layout.test).write_bytes(records[len(layout.train) * per_batch :].tobytes())
    if layout is CIFAR10:
        (folder / "batches.meta.txt").write_text("airplane\nautomobile\n")
    else:
        (folder / "coarse_label_names.txt").write_text("aquatic_mammals\n")
        (folder / "fine_label_names.txt").write_text("apple\n")
    return x, y


# ---- CIFAR python version ----------------------------------------------------------------

_MARK, _STOP, _SETITEMS, _APPENDS, _TUPLE = b"(", b".", b"u", b"e", b"t"


class Py2Pickle:
    """Opcodes as Python 2's cPickle wrote them at protocol 2 (what the published
    ``cifar-10-batches-py`` files hold): ``str`` as SHORT_BINSTRING/BINSTRING, a numpy
    array through numpy 1's ``ndarray.__reduce__``, lists appended 1000 at a time."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")
        self.memo = 0

    def put(self) -> None:
        if self.memo < 256:
            self.out += b"q" + bytes([self.memo])  # BINPUT
        else:
            self.out += b"r" + struct.pack("<I", self.memo)  # LONG_BINPUT
        self.memo += 1

    def string(self, s: bytes) -> None:
        if len(s) < 256:
            self.out += b"U" + bytes([len(s)]) + s
        else:
            self.out += b"T" + struct.pack("<I", len(s)) + s
        self.put()

    def int(self, v: int) -> None:
        if 0 <= v < 256:
            self.out += b"K" + bytes([v])
        elif 0 <= v < 65536:
            self.out += b"M" + struct.pack("<H", v)
        else:
            self.out += b"J" + struct.pack("<i", v)

    def global_(self, module: str, name: str) -> None:
        self.out += b"c" + f"{module}\n{name}\n".encode()
        self.put()

    def array(self, a: np.ndarray) -> None:
        self.global_("numpy.core.multiarray", "_reconstruct")
        self.global_("numpy", "ndarray")
        self.int(0)
        self.out += b"\x85"  # TUPLE1
        self.string(b"b")
        self.out += b"\x87R"  # TUPLE3 REDUCE
        self.put()
        self.out += _MARK
        self.int(1)
        for d in a.shape:
            self.int(d)
        self.out += b"\x86"  # TUPLE2 (the shape)
        self.global_("numpy", "dtype")
        self.string(b"u1")
        self.int(0)
        self.int(1)
        self.out += b"\x87R"
        self.put()
        self.out += _MARK
        self.int(3)
        self.string(b"|")
        self.out += b"NNN"
        self.int(-1)
        self.int(-1)
        self.int(0)
        self.out += _TUPLE + b"b"  # the dtype's state, BUILD
        self.out += b"\x89"  # NEWFALSE: C order
        self.string(np.ascontiguousarray(a).tobytes())
        self.out += _TUPLE + b"b"

    def int_list(self, values: list[int]) -> None:
        self.out += b"]"
        self.put()
        for i in range(0, len(values), 1000):
            self.out += _MARK
            for v in values[i : i + 1000]:
                self.int(v)
            self.out += _APPENDS

    def batch(self, entries: dict[str, object]) -> bytes:
        self.out += b"}"
        self.put()
        self.out += _MARK
        for key, value in entries.items():
            self.string(key.encode())
            if isinstance(value, np.ndarray):
                self.array(value)
            elif isinstance(value, str):
                self.string(value.encode())
            else:
                assert isinstance(value, list)
                if value and isinstance(value[0], str):
                    self.out += b"]"
                    self.put()
                    self.out += _MARK
                    for s in value:
                        self.string(s.encode())
                    self.out += _APPENDS
                else:
                    self.int_list(value)
        self.out += _SETITEMS + _STOP
        return bytes(self.out)


def cifar_entries(x: np.ndarray, y: np.ndarray, layout: CifarLayout, label: str) -> dict:
    """A batch's dict as the python version holds it."""
    entries: dict[str, object] = {"batch_label": label}
    if layout.label_bytes == 1:
        entries["labels"] = [int(v) for v in y[:, 0]]
    else:
        entries["fine_labels"] = [int(v) for v in y[:, 1]]
        entries["coarse_labels"] = [int(v) for v in y[:, 0]]
    entries["data"] = x.reshape(len(x), 3072)
    entries["filenames"] = [f"img_{i}.png" for i in range(len(x))]
    return entries


def write_cifar_python(
    root: Path,
    layout: CifarLayout = CIFAR10,
    per_batch: int = 4,
    n_test: int = 3,
    *,
    protocol: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``root/<python folder>/…`` with the images of :func:`write_cifar_binary`: pickles in
    Python 2's layout (``protocol`` None) or written by this Python's ``pickle``."""
    x, y = cifar_samples(layout, per_batch, n_test)
    folder = root / layout.python
    folder.mkdir(parents=True, exist_ok=True)
    n_train = per_batch * len(layout.train)
    bounds = [(i * per_batch, (i + 1) * per_batch) for i in range(len(layout.py_train))]
    for name, (lo, hi) in zip(
        (*layout.py_train, layout.py_test), (*bounds, (n_train, len(x))), strict=True
    ):
        entries = cifar_entries(x[lo:hi], y[lo:hi], layout, f"batch {name}")
        if protocol is None:
            blob = Py2Pickle().batch(entries)
        else:
            blob = pickle.dumps(entries, protocol=protocol)
        (folder / name).write_bytes(blob)
    return x, y


# ---- SVHN --------------------------------------------------------------------------------


def write_svhn(root: Path, n_train: int = 10, n_test: int = 4, n_extra: int = 0) -> Written:
    """``train_32x32.mat``, ``test_32x32.mat`` (and ``extra_32x32.mat``): ``X`` (32, 32, 3,
    N) uint8 and ``y`` (N, 1) with the digit 0 written as 10. Returns the images with the
    labels as digits, training, extra, then test samples."""
    root.mkdir(parents=True, exist_ok=True)
    sizes = {"train_32x32.mat": n_train, "extra_32x32.mat": n_extra, "test_32x32.mat": n_test}
    xs, ys = [], []
    for i, (name, n) in enumerate(sizes.items()):
        if name.startswith("extra") and not n_extra:
            continue
        x = images(n, (3, 32, 32), seed=10 + i)
        digit = np.arange(n, dtype=np.uint8) % 10  # every digit, 0 included
        stored = np.where(digit == 0, 10, digit).astype(np.uint8).reshape(n, 1)
        scipy.io.savemat(root / name, {"X": x.transpose(2, 3, 1, 0), "y": stored})
        xs.append(x)
        ys.append(digit)
    return Written(np.concatenate(xs), np.concatenate(ys), n_train + n_extra)


# ---- ImageFolder -------------------------------------------------------------------------


def write_image_folder(
    root: Path,
    counts: dict[str, int],
    *,
    size: tuple[int, int] = (12, 10),
    suffix: str = ".png",
    seed: int = 0,
) -> dict[str, list[Path]]:
    """``root/<class>/<k>.<suffix>``: ``counts[class]`` RGB images of ``size`` (w, h)."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[Path]] = {}
    for c, n in counts.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            path = root / c / f"{k:03d}{suffix}"
            Image.fromarray(pixels, "RGB").save(path)
            written.setdefault(c, []).append(path)
    return written


# ---- archives ----------------------------------------------------------------------------


def write_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    """A ``.tar.gz`` whose members are named exactly as given (``../x`` included)."""
    import io

    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
