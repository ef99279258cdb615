"""Where each dataset read from files can be downloaded from, and how its files are checked.

:data:`SOURCES` holds, per dataset, the files to fetch (mirrors tried in order, the MD5 the
publisher or torchvision gives) and how each file the dataset reads is checked: by MD5
where one is published, by record count and size for the extracted CIFAR binary files,
which have none. :func:`download` fetches (only when asked), checks and unpacks;
:func:`verify` checks what is there. ``$ADVGRID_DATA_MIRROR`` replaces every URL by
``MIRROR/NAME/FILE`` (a lab's own copy; nothing else is tried then).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tasks.datasets.base import DATASETS
from tasks.datasets.fetch import DownloadError, Progress, extract_tar, fetch, md5_of
from tasks.datasets.files import FileFormat, MissingDataError, default_root
from tasks.errors import InputError

log = logging.getLogger(__name__)

ENV_MIRROR = "ADVGRID_DATA_MIRROR"


@dataclass(frozen=True)
class Remote:
    """A file to fetch.

    Attributes:
        file: Its name under the dataset's folder.
        urls: Where from, tried in order.
        md5: Its published MD5.
        size: Its size in bytes, where known (for the progress bar).
        content_md5: A gzipped file's MD5 after decompression: a re-compressed copy of the
            same data (Debian's Fashion-MNIST package) matches this one, not ``md5``.
        extract: A ``.tar.gz`` to unpack into the folder (then removed).
        optional: Fetched only when asked for (SVHN's 1.3 GB of extra samples).
    """

    file: str
    urls: tuple[str, ...]
    md5: str
    size: int | None = None
    content_md5: str | None = None
    extract: bool = False
    optional: bool = False


@dataclass(frozen=True)
class Expect:
    """How one file a dataset reads is checked: its MD5 (``content_md5``: of a gzipped
    file's decompressed bytes), or, with no published checksum, ``records`` of
    ``record_bytes`` each."""

    md5: str | None = None
    content_md5: str | None = None
    records: int | None = None
    record_bytes: int | None = None


@dataclass(frozen=True)
class Source:
    """Where one dataset comes from.

    Attributes:
        remotes: The files :func:`download` fetches.
        files: The files the dataset reads after a download, relative to its folder.
        checks: How each file is checked, by file name (the other published forms too).
    """

    remotes: tuple[Remote, ...]
    files: tuple[str, ...]
    checks: dict[str, Expect] = field(default_factory=dict)


class Check(NamedTuple):
    """One row of :func:`verify`."""

    file: str
    expected: str
    found: str
    ok: bool


def _idx(mirrors: tuple[str, ...], published: dict[str, tuple[str, str]]) -> Source:
    """An idx dataset: ``published`` maps each gz file to (its MD5, the MD5 of its content)."""
    remotes = tuple(
        Remote(f, tuple(m + f for m in mirrors), md5, content_md5=raw)
        for f, (md5, raw) in published.items()
    )
    checks = {f: Expect(md5, raw) for f, (md5, raw) in published.items()}
    checks |= {f.removesuffix(".gz"): Expect(raw) for f, (_, raw) in published.items()}
    return Source(remotes, tuple(published), checks)


def _cifar(archive: Remote, folder: str, records: dict[str, int], python: dict[str, str]) -> Source:
    """A CIFAR dataset: the binary archive, its files' record counts, the python version's
    per-file MD5s (torchvision's)."""
    size = 3073 if folder.startswith("cifar-10-") else 3074
    checks = {f: Expect(records=n, record_bytes=size) for f, n in records.items()}
    checks |= {f: Expect(md5) for f, md5 in python.items()}
    return Source((archive,), tuple(f"{folder}/{f}" for f in records), checks)


# MD5s of the gz files: torchvision's (mnist.py), the same as the publishers' pages. The MD5s
# of their decompressed content are not published by the authors; they are the values public
# listings of the decompressed files give, and for Fashion-MNIST the decompressed files of
# Debian's package (dataset-fashion-mnist, whose gz files are re-compressed) match them.
MNIST = _idx(
    ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    {
        "train-images-idx3-ubyte.gz": (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "6bbc9ace898e44ae57da46a324031adb",
        ),
        "train-labels-idx1-ubyte.gz": (
            "d53e105ee54ea40749a09fcbcd1e9432",
            "a25bea736e30d166cdddb491f175f624",
        ),
        "t10k-images-idx3-ubyte.gz": (
            "9fb629c4189551a2d022fa330f9573f3",
            "2646ac647ad5339dbf082846283269ea",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "ec29112dd5afa0611ce80d1b7f02629c",
            "27ae3e4e09519cfbb04c329615203637",
        ),
    },
)
FASHION_MNIST = _idx(
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    {
        "train-images-idx3-ubyte.gz": (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        ),
        "train-labels-idx1-ubyte.gz": (
            "25c81989df183df01b3e8a0aad5dffbe",
            "9018921c3c673c538a1fc5bad174d6f9",
        ),
        "t10k-images-idx3-ubyte.gz": (
            "bef4ecab320f06d8554ea6380940ec79",
            "8181f5470baa50b63fa0f6fddb340f0a",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "bb300cfdad3c16e7a12a480ee83cd310",
            "15d484375f8d13e6eb1aabb0c3f46965",
        ),
    },
)
# The binary archives' MD5s and sizes are the ones the dataset's page
# (https://www.cs.toronto.edu/~kriz/cifar.html) lists. The extracted .bin files have no
# published checksum: they are checked by record count and size. The python version's
# per-file MD5s are torchvision's (cifar.py).
_TORONTO = "https://www.cs.toronto.edu/~kriz/"
CIFAR10 = _cifar(
    Remote(
        "cifar-10-binary.tar.gz",
        (_TORONTO + "cifar-10-binary.tar.gz",),
        "c32a1d4ab5d03f1284b67883e8d87530",
        size=170_052_171,
        extract=True,
    ),
    "cifar-10-batches-bin",
    {**{f"data_batch_{i}.bin": 10_000 for i in range(1, 6)}, "test_batch.bin": 10_000},
    {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
    },
)
CIFAR100 = _cifar(
    Remote(
        "cifar-100-binary.tar.gz",
        (_TORONTO + "cifar-100-binary.tar.gz",),
        "03b5dce01913d631647c71ecec9e9cb8",
        size=168_513_733,
        extract=True,
    ),
    "cifar-100-binary",
    {"train.bin": 50_000, "test.bin": 10_000},
    {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
)
# torchvision's svhn.py
_EXTRA = "extra_32x32.mat"
_SVHN = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    _EXTRA: "a93ce644f1a588dc4d68dda5feec44a7",
}
SVHN = Source(
    tuple(
        Remote(f, (f"http://ufldl.stanford.edu/housenumbers/{f}",), md5, optional=f == _EXTRA)
        for f, md5 in _SVHN.items()
    ),
    ("train_32x32.mat", "test_32x32.mat"),
    {f: Expect(md5) for f, md5 in _SVHN.items()},
)

SOURCES: dict[str, Source] = {
    "mnist": MNIST,
    "fashion_mnist": FASHION_MNIST,
    "cifar10": CIFAR10,
    "cifar100": CIFAR100,
    "svhn": SVHN,
}


def source_of(name: str) -> Source:
    """The download source of dataset ``name``; :class:`InputError` when it has none."""
    if name not in SOURCES:
        file_format(name)  # an unknown name or generated data: that error first
        raise InputError(
            f"dataset {name!r} has no published files to download or check (there are for "
            f"{', '.join(sorted(SOURCES))}); put its files in its folder yourself"
        )
    return SOURCES[name]


def file_format(name: str) -> FileFormat:
    """The registered format of dataset ``name``; :class:`InputError` for generated data."""
    obj = DATASETS.get(name).obj
    if not isinstance(obj, FileFormat):
        raise InputError(
            f"dataset {name!r} is generated, not read from files; `advgrid data ls` lists the "
            "datasets read from files"
        )
    return obj


def folder_of(name: str, root: str | Path | None = None) -> Path:
    """The folder dataset ``name`` is read from: ``root``, else as its format resolves it
    (``$ADVGRID_DATA/NAME``, ``~/.advgrid/data/NAME``, a system folder that has the files)."""
    fmt = file_format(name)
    params = DATASETS.params_of(name, {"root": None if root is None else str(root)})
    return fmt.root(params)  # type: ignore[arg-type]


def expectation(expect: Expect) -> str:
    """What :func:`verify` says it expects of a file."""
    if expect.md5 is not None:
        return f"md5 {expect.md5}"
    return (
        f"{expect.records} records of {expect.record_bytes} bytes (no published checksum "
        "exists for this file)"
    )


def check_file(path: Path, expect: Expect) -> tuple[str, str, bool]:
    """``(expected, found, ok)`` of one present file."""
    want = expectation(expect)
    if expect.md5 is None:
        assert expect.records is not None, expect
        assert expect.record_bytes is not None, expect
        size = path.stat().st_size
        if size % expect.record_bytes:
            return want, f"{size} bytes: not a whole number of records (truncated)", False
        n = size // expect.record_bytes
        return want, f"{n} records", n == expect.records
    found = md5_of(path)
    if found == expect.md5 or expect.content_md5 is None:
        return want, f"md5 {found}", found == expect.md5
    try:
        content = md5_of(path, gunzip=True)
    except (OSError, EOFError) as exc:
        return want, f"md5 {found}; not a readable gzip file ({exc})", False
    ok = content == expect.content_md5
    note = " (re-compressed; the decompressed data are the published ones)" if ok else ""
    return want, f"md5 {found}; decompressed md5 {content}{note}", ok


def _wanted(name: str, folder: Path, source: Source) -> list[tuple[str, Path]]:
    """``(name relative to folder, path)`` of the files to check: those the dataset reads
    (those a download writes when some are missing) and the other published forms there."""
    fmt = file_format(name)
    params = DATASETS.params_of(name, {"root": str(folder)})
    try:
        data_folder, files = fmt.files(params)  # type: ignore[arg-type]
    except MissingDataError:
        data_folder, files = folder, [folder / rel for rel in source.files]
    names = {f.name for f in files}
    if data_folder.is_dir():
        files += [
            p
            for p in sorted(data_folder.iterdir())
            if p.name in source.checks and p.name not in names and p.is_file()
        ]
    return [(f.relative_to(folder).as_posix(), f) for f in files]


def verify(
    name: str, root: str | Path | None = None, *, source: Source | None = None
) -> list[Check]:
    """Check the files of dataset ``name`` in its folder (``root``, else where it is read
    from): by MD5, or by record count and size where no checksum is published.

    Every file the dataset reads is a row, and every other published form of its files that
    is there (a gzipped and a raw idx file, SVHN's extra samples); a file it needs and lacks
    is a row whose ``found`` is "missing".
    """
    source = source or source_of(name)
    folder = folder_of(name, root)
    rows = []
    for rel, path in _wanted(name, folder, source):
        expect = source.checks.get(path.name)
        if not path.is_file():
            rows.append(Check(rel, expectation(expect) if expect else "present", "missing", False))
        elif expect is None:
            rows.append(Check(rel, "present (no published checksum)", "present", True))
        else:
            rows.append(Check(rel, *check_file(path, expect)))
    return rows


def mirrored(name: str, remote: Remote) -> tuple[str, ...]:
    """The URLs to try for ``remote``: ``$ADVGRID_DATA_MIRROR/NAME/FILE`` alone when set."""
    mirror = os.environ.get(ENV_MIRROR)
    return (f"{mirror.rstrip('/')}/{name}/{remote.file}",) if mirror else remote.urls


def _present(folder: Path, remote: Remote, source: Source) -> bool:
    """Whether ``remote`` need not be fetched: it (or, for an archive, every file the
    dataset reads) is there and checks out."""
    if remote.extract:
        paths = [(folder / rel, source.checks.get(Path(rel).name)) for rel in source.files]
    else:
        paths = [(folder / remote.file, Expect(remote.md5, remote.content_md5))]
    return all(p.is_file() and e is not None and check_file(p, e)[2] for p, e in paths)


def download(
    name: str,
    root: str | Path | None = None,
    progress: Progress | None = None,
    *,
    optional: bool = False,
    source: Source | None = None,
) -> Path:
    """Fetch dataset ``name`` into ``root`` (default ``$ADVGRID_DATA/NAME``, else
    ``~/.advgrid/data/NAME``), check every file and unpack archives; the folder.

    Files already there that check out are not fetched again; an archive is removed once
    unpacked. ``optional`` also fetches the optional files (SVHN's extra samples).

    Raises:
        DownloadError: a file no URL served with its checksum, or an unsafe archive.
        InputError: a dataset with no download source.
    """
    source = source or source_of(name)
    folder = Path(root).expanduser() if root is not None else default_root(name)
    folder.mkdir(parents=True, exist_ok=True)
    for remote in source.remotes:
        if (remote.optional and not optional) or _present(folder, remote, source):
            log.info("%s: %s is there already", name, remote.file)
            continue
        dest = folder / remote.file
        fetch(
            mirrored(name, remote),
            dest,
            remote.md5,
            content_md5=remote.content_md5,
            size=remote.size,
            progress=progress,
        )
        if remote.extract:
            extract_tar(dest, folder)
            dest.unlink()
    bad = [c for c in verify(name, folder, source=source) if not c.ok]
    if bad:
        listed = "; ".join(f"{c.file}: {c.found}, expected {c.expected}" for c in bad)
        raise DownloadError(f"{name}: downloaded into {folder}, but {listed}")
    return folder
