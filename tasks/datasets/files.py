"""Datasets read from files: where the files are, which files make a dataset, and the digest
of their bytes (what a cell key holds of a dataset read from files).

A dataset's folder is its ``root:`` param, else ``$ADVGRID_DATA/NAME``, else
``~/.advgrid/data/NAME``; a format may add the folders an operating-system package installs
its files to (Debian's ``dataset-fashion-mnist``). The digest of a set of files is the
SHA-256 over each file's name and SHA-256; a file's SHA-256 is computed once and cached by
its path, size and modification time (``$ADVGRID_CACHE/file-digests.json``, default
``~/.cache/advgrid``), so a study plans without reading its images again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tasks.datasets.base import DATASETS, Data, DatasetParams, FileParams
from tasks.errors import WorkerDataError

ENV_DATA, ENV_CACHE = "ADVGRID_DATA", "ADVGRID_CACHE"
_CHUNK = 1 << 20


class MissingDataError(WorkerDataError):
    """A dataset's folder is missing or lacks some of the files its format needs."""


@dataclass(frozen=True)
class Info:
    """What planning needs of a dataset, read without decoding any image.

    Attributes:
        size: how many samples (training and test splits together).
        n_train: the official training split's size (its samples come first); None when the
            format has no official split.
        input_shape: ``(C, H, W)``.
        num_classes: how many classes.
        digest: SHA-256 over the dataset's files (None for data generated from params).
    """

    size: int
    n_train: int | None
    input_shape: tuple[int, ...]
    num_classes: int
    digest: str | None = None


def default_root(name: str) -> Path:
    """``$ADVGRID_DATA/NAME``, else ``~/.advgrid/data/NAME``."""
    base = os.environ.get(ENV_DATA)
    return (Path(base).expanduser() if base else Path.home() / ".advgrid" / "data") / name


class FileFormat:
    """A dataset in its published file layout; registered as an instance
    (``DATASETS.register("mnist", params=IdxParams)(Idx(...))``) and called like a loader.

    A subclass says which files it needs (:meth:`find`), how many samples they hold without
    decoding them (:meth:`info`) and how to read them (:meth:`read`).
    """

    name: str = ""
    # folders an operating-system package installs these files to, tried after the default
    system_roots: tuple[str, ...] = ()

    def expected(self, params: FileParams) -> list[str]:
        """The files this format needs under its folder (for messages and ``data verify``)."""
        raise NotImplementedError

    def find(self, root: Path, params: FileParams) -> list[Path]:
        """The files under ``root`` that make up the dataset; :class:`MissingDataError`
        naming what is missing when some are."""
        raise NotImplementedError

    def info(self, root: Path, files: list[Path], params: FileParams) -> Info:
        """:class:`Info` from headers and sizes (no image decoded); ``digest`` unset."""
        raise NotImplementedError

    def read(self, root: Path, files: list[Path], params: FileParams) -> Data:
        """The whole dataset (images uint8, or a lazy :class:`ImageSource`)."""
        raise NotImplementedError

    def root(self, params: FileParams) -> Path:
        """The folder to read: ``root:``, else the default, else a system folder that has
        the files, else the default (whose error then names what is missing)."""
        if params.root is not None:
            return Path(params.root).expanduser()
        default = default_root(self.name)
        if default.exists() or not self.system_roots:
            return default
        for folder in self.system_roots:
            try:
                self.find(Path(folder), params)
            except MissingDataError:
                continue
            return Path(folder)
        return default

    def files(self, params: FileParams) -> tuple[Path, list[Path]]:
        root = self.root(params)
        if not root.is_dir():
            raise MissingDataError(self.missing_message(root, params, "there is no such folder"))
        return root, self.find(root, params)

    def missing_message(self, root: Path, params: FileParams, what: str) -> str:
        expected = ", ".join(self.expected(params)) or "(see the format's documentation)"
        return (
            f"dataset {self.name!r} at {root}: {what}. Expected there: {expected}. Fetch them "
            f"with `advgrid data download {self.name} --root {root}`, or point the dataset's "
            f"`root:` (or ${ENV_DATA}) at a folder that holds them"
        )

    def describe(self, params: FileParams) -> Info:
        """:class:`Info` with the digest of the files (cached by path, size and mtime)."""
        root, files = self.files(params)
        info = self.info(root, files, params)
        return Info(
            size=info.size,
            n_train=info.n_train,
            input_shape=info.input_shape,
            num_classes=info.num_classes,
            digest=digest(files, root),
        )

    def __call__(self, params: FileParams) -> Data:
        root, files = self.files(params)
        return self.read(root, files, params)


def digest(files: list[Path], root: Path) -> str:
    """SHA-256 over the sorted ``relative name, file SHA-256`` lines of ``files``."""
    cache = _DigestCache.load()
    lines = sorted(f"{f.relative_to(root).as_posix()}\0{cache.sha256(f)}\n" for f in files)
    cache.save()
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of one file, from the cache when its size and mtime are unchanged."""
    cache = _DigestCache.load()
    value = cache.sha256(path)
    cache.save()
    return value


def _cache_path() -> Path:
    base = os.environ.get(ENV_CACHE)
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "advgrid") / (
        "file-digests.json"
    )


class _DigestCache:
    """``{absolute path: {size, mtime_ns, sha256}}`` in one JSON file, written atomically;
    an unreadable cache is ignored (rebuilt), never an error."""

    def __init__(self, path: Path, entries: dict[str, dict]) -> None:
        self.path, self.entries, self.dirty = path, entries, False

    @classmethod
    def load(cls) -> _DigestCache:
        path = _cache_path()
        try:
            entries = json.loads(path.read_text())
            if not isinstance(entries, dict):
                entries = {}
        except (OSError, ValueError):
            entries = {}
        return cls(path, entries)

    def sha256(self, file: Path) -> str:
        st = file.stat()
        key = str(file.resolve())
        hit = self.entries.get(key)
        if (
            isinstance(hit, dict)
            and hit.get("size") == st.st_size
            and hit.get("mtime_ns") == st.st_mtime_ns
            and isinstance(hit.get("sha256"), str)
        ):
            return str(hit["sha256"])
        h = hashlib.sha256()
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
        value = h.hexdigest()
        self.entries[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": value}
        self.dirty = True
        return value

    def save(self) -> None:
        if not self.dirty:
            return
        _write_json(self.path, self.entries)  # a read-only home: recomputed next time
        self.dirty = False


def describe(name: str, params: DatasetParams) -> Info:
    """:class:`Info` of dataset ``name``: from headers and the digest cache for a format read
    from files; by loading it for data generated from params (digits, synthetic, plugins)."""
    obj = DATASETS.get(name).obj
    if isinstance(obj, FileFormat):
        assert isinstance(params, FileParams), params
        return obj.describe(params)
    data = obj(params)
    return Info(
        size=len(data.y),
        n_train=data.n_train,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
    )


def normalization_stats(
    name: str, params: DatasetParams
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and std a model trained here normalizes dataset ``name`` by.

    For a dataset read from files they are computed once per digest (reading its images)
    and kept beside the file digests (``dataset-stats.json``), so the driver reads no image
    to import a checkpoint on a dataset it has seen; other datasets are loaded.
    """
    obj = DATASETS.get(name).obj
    if not isinstance(obj, FileFormat):
        data = obj(params)
        return data.mean, data.std
    assert isinstance(params, FileParams), params
    identity = {k: v for k, v in params.model_dump(mode="json").items() if k != "root"}
    key = f"{name}:{obj.describe(params).digest}:{json.dumps(identity, sort_keys=True)}"
    path = _cache_path().with_name("dataset-stats.json")
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    hit = known.get(key) if isinstance(known, dict) else None
    if isinstance(hit, dict) and "mean" in hit and "std" in hit:
        return tuple(hit["mean"]), tuple(hit["std"])
    data = obj(params)
    known = known if isinstance(known, dict) else {}
    known[key] = {"mean": list(data.mean), "std": list(data.std)}
    _write_json(path, known)
    return data.mean, data.std


def _write_json(path: Path, value: object) -> None:
    """``value`` as JSON at ``path``, atomically; silently not where the folder is read-only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            json.dump(value, fh)
        os.replace(tmp, path)
    except OSError:
        return
