"""A database per test, on SQLite and (where a server answers) on PostgreSQL; an artifact
store per test, on each way a store can be opened.

PostgreSQL databases come from the ``pg_url`` fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pytest
from fsspec import AbstractFileSystem

from storage import ArtifactStore, Database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sub' / 'index.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A database at the current schema, on each backend."""
    database = Database.open(db_url)
    yield database
    database.close()


# -- artifact stores -------------------------------------------------------------------

ON_DISK = ["path", "file_url", "fsspec_local"]
STORE_KINDS = [*ON_DISK, "memory"]


@dataclass
class RawStore:
    """An artifact store and its files reached past it (to corrupt, plant and list them).

    ``kind`` is how the store was opened: ``path`` (a folder), ``file_url`` (``file://`` +
    that folder), ``fsspec_local`` (the fsspec backend's rename path, on fsspec's local
    filesystem) or ``memory`` (the fsspec backend's object-store path on ``memory://``: a
    unit check of that code path only, since an in-memory filesystem is shared by nothing
    outside this process and proves nothing about a store reachable from every node).
    """

    kind: str
    store: ArtifactStore
    fs: AbstractFileSystem
    root: str

    def full(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def read(self, rel: str) -> bytes:
        return bytes(self.fs.cat_file(self.full(rel)))

    def write(self, rel: str, blob: bytes) -> None:
        self.fs.makedirs(self.full(rel).rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(self.full(rel), blob)

    def files(self) -> list[str]:
        """Every file under the root, relative to it, sorted."""
        return sorted(f.removeprefix(f"{self.root}/") for f in self.fs.find(self.root))


def open_raw(kind: str, folder: Path) -> Iterator[RawStore]:
    """A fresh, empty store of ``kind`` (removed afterwards when it is in memory)."""
    if kind == "memory":
        fs = fsspec.filesystem("memory")
        root = f"/advgrid-test-{uuid.uuid4().hex[:12]}"
        try:
            yield RawStore(kind, ArtifactStore(f"memory://{root}"), fs, root)
        finally:
            if fs.exists(root):
                fs.rm(root, recursive=True)
        return
    local = fsspec.filesystem("file")
    stores = {
        "path": lambda: ArtifactStore(folder),
        "file_url": lambda: ArtifactStore(folder.as_uri()),
        "fsspec_local": lambda: ArtifactStore(str(folder), filesystem=local),
    }
    yield RawStore(kind, stores[kind](), local, str(folder))


@pytest.fixture(params=STORE_KINDS)
def raw(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RawStore]:
    """An empty artifact store, opened each way it can be (see :class:`RawStore`)."""
    yield from open_raw(request.param, tmp_path / "store")


@pytest.fixture(params=ON_DISK)
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RawStore]:
    """An empty artifact store in a local folder, opened each way a folder can be."""
    yield from open_raw(request.param, tmp_path / "store")
