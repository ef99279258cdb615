"""Artifact stores behind URLs: which URLs are accepted, and how the fsspec backend writes.

The store contract itself runs on every way a store is opened in ``test_artifacts.py``.
``memory://`` appears here only as a unit check of the object-store code path (one direct
PUT, no rename): an in-memory filesystem is shared by nothing outside this process, so it
proves nothing about a store that every node reaches. The ``file://`` cases are real
folders; a whole study on a ``file://`` store is in ``tests/orchestrator/test_url_store.py``.
"""

from __future__ import annotations

import importlib.util
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fsspec
import pytest
import torch
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from storage import ArtifactStore, NotFoundError, StorageError
from storage.fsstore import _epoch
from tests.storage.conftest import RawStore


def _put(store: ArtifactStore, value: float = 1.0) -> str:
    return store.put({"x": torch.full((16,), value)}, {"kind": "test"}).digest


# -- which URLs name a store -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("s3://bucket/../other", "'..' segment is not allowed"),
        ("s3://bucket/a/%2E%2E/b", "'..' segment is not allowed"),
        ("file:///srv/advgrid/../etc", "'..' segment is not allowed"),
        ("s3://../bucket", "'..' segment is not allowed"),
        ("s3://bucket/store?endpoint_url=http://evil", "query string or fragment"),
        ("gs://bucket/store#x", "query string or fragment"),
        ("simplecache::s3://bucket/store", "chained fsspec URLs"),
        ("file://server/srv/advgrid", "file:///abs/path"),
        ("file://relative/path", "file:///abs/path"),
        ("s3://", "expected SCHEME://PATH"),
        ("memory://", "expected SCHEME://PATH"),
        ("memory:///", "names no folder or bucket"),
        ("nosuchproto://bucket/store", "fsspec cannot open it"),
    ],
)
def test_urls_that_cannot_name_a_store_are_refused(url: str, error: str) -> None:
    with pytest.raises(StorageError, match=error):
        ArtifactStore(url)


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_a_missing_backend_says_what_to_install() -> None:
    with pytest.raises(StorageError, match="pip install s3fs") as info:
        ArtifactStore("s3://AKIAEXAMPLE:hunter2@bucket/advgrid")
    assert "hunter2" not in str(info.value)
    assert "AKIAEXAMPLE:***@bucket" in str(info.value)


def test_a_password_in_a_store_url_is_never_shown() -> None:
    url = "memory://lab:hunter2@host/advgrid-mask-test"
    store = ArtifactStore(url)
    try:
        digest = _put(store)
        shown = [repr(store), store.location(), store.location(digest)]
        with pytest.raises(NotFoundError) as info:
            store.get("0" * 64)
        shown.append(str(info.value))
        assert all("hunter2" not in s and "lab:***@host" in s for s in shown), shown
        assert store.root == url  # the URL itself, for building payloads, stays usable
    finally:
        MemoryFileSystem().rm("/lab:hunter2@host", recursive=True)


# -- file:// is the folder it names ----------------------------------------------------


@pytest.mark.parametrize("prefix", ["file://", "file://localhost", "local://"])
def test_a_file_url_is_the_same_store_as_its_path(tmp_path: Path, prefix: str) -> None:
    folder = tmp_path / "a b"  # percent-encoded in the URL
    by_url = ArtifactStore(prefix + folder.as_uri().removeprefix("file://"))
    by_path = ArtifactStore(folder)
    assert by_url.root == by_path.root == folder
    one, two = _put(by_url, 1.0), _put(by_path, 2.0)
    assert by_path.get(one)[0]["x"][0] == 1.0
    assert by_url.get(two)[0]["x"][0] == 2.0
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == sorted([by_path.uri(one), by_path.uri(two)])
    assert list(by_url.iter_digests()) == list(by_path.iter_digests()) == sorted([one, two])


def test_an_fsspec_store_on_a_folder_is_readable_as_that_folder(tmp_path: Path) -> None:
    written = ArtifactStore(str(tmp_path), filesystem=fsspec.filesystem("file"))
    digest = _put(written)
    assert ArtifactStore(tmp_path).get(digest)[0]["x"].sum() == 16
    same = ArtifactStore(f"file://{tmp_path}", filesystem=fsspec.filesystem("file"))
    assert same.exists(digest)  # a root given with its protocol on an explicit filesystem


# -- how the fsspec backend writes -----------------------------------------------------


class _Recording:
    """Records the writes and renames a filesystem is asked for."""

    cachable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, str]] = []
        self.fail: str | None = None

    def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
        self.calls.append(("pipe", path))
        if self.fail == "pipe":
            raise ConnectionError("connection reset by peer")
        super().pipe_file(path, value, **kwargs)  # type: ignore[misc]

    def mv(self, path1: str, path2: str, **kwargs: Any) -> None:
        self.calls.append(("mv", path2))
        if self.fail == "mv":
            raise PermissionError(13, "Permission denied")
        if self.fail == "mv-lost-race":  # the other writer renamed first; no replacing here
            super().pipe_file(path2, super().cat_file(path1))  # type: ignore[misc]
            raise FileExistsError(17, "File exists")
        super().mv(path1, path2, **kwargs)  # type: ignore[misc]


class RecordingMemory(_Recording, MemoryFileSystem):
    pass


class RecordingLocal(_Recording, LocalFileSystem):
    pass


def test_an_object_store_gets_one_put_of_the_final_key() -> None:
    fs = RecordingMemory(global_store=False, skip_instance_cache=True)
    store = ArtifactStore("/advgrid", filesystem=fs)
    digest = _put(store)
    assert fs.calls == [("pipe", f"/advgrid/{store.uri(digest)}")]
    fs.calls.clear()
    assert _put(store) == digest
    assert fs.calls == []  # already there: not written again


def test_a_failed_put_leaves_nothing_under_the_digest() -> None:
    fs = RecordingMemory(global_store=False, skip_instance_cache=True)
    fs.fail = "pipe"
    store = ArtifactStore("/advgrid", filesystem=fs)
    with pytest.raises(StorageError, match="cannot write artifact memory:///advgrid/objects/"):
        _put(store)
    assert fs.find("/advgrid") == []


def test_elsewhere_a_temporary_name_is_renamed_into_place(tmp_path: Path) -> None:
    fs = RecordingLocal()
    store = ArtifactStore(str(tmp_path), filesystem=fs)
    digest = _put(store)
    final = f"{tmp_path}/{store.uri(digest)}"
    [(pipe, tmp), (mv, target)] = fs.calls
    assert (pipe, mv, target) == ("pipe", "mv", final)
    assert tmp.rsplit("/", 1)[0] == final.rsplit("/", 1)[0]  # same folder: a true rename
    assert tmp.rsplit("/", 1)[1].startswith(".tmp-")
    assert [str(p) for p in tmp_path.rglob("*") if p.is_file()] == [final]


def test_a_failed_rename_leaves_nothing_behind(tmp_path: Path) -> None:
    fs = RecordingLocal()
    fs.fail = "mv"
    store = ArtifactStore(str(tmp_path), filesystem=fs)
    with pytest.raises(StorageError, match="cannot write artifact .*Permission denied"):
        _put(store)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_losing_a_rename_race_to_the_same_digest_is_harmless(tmp_path: Path) -> None:
    fs = RecordingLocal()
    fs.fail = "mv-lost-race"
    store = ArtifactStore(str(tmp_path), filesystem=fs)
    digest = _put(store)
    assert store.verify() == []
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [digest[2:] + ".safetensors"]


def test_concurrent_writers_of_one_digest(raw: RawStore) -> None:
    digests: list[str] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(5):
                digests.append(_put(raw.store))
        except BaseException as exc:  # reported below: a thread's exception is lost otherwise
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(digests)) == 1
    assert raw.files() == [raw.store.uri(digests[0])]
    assert raw.store.verify() == []


def test_the_age_of_an_object_is_its_modification_time() -> None:
    fs = MemoryFileSystem(global_store=False, skip_instance_cache=True)
    store = ArtifactStore("/advgrid", filesystem=fs)
    digest = _put(store)
    fs.store[f"/advgrid/{store.uri(digest)}"].created = datetime.now(timezone.utc) - timedelta(
        hours=2
    )
    age = store.age_s(digest)
    assert age is not None
    assert 7200 <= age < 7800


@pytest.mark.parametrize(
    "when",
    [
        1_700_000_000,
        1_700_000_000.0,
        datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc),
        datetime(2023, 11, 14, 22, 13, 20),  # naive: UTC, as S3 and GCS mean it
        "2023-11-14T22:13:20Z",
        "2023-11-14T22:13:20.000+00:00",
    ],
)
def test_modification_times_as_backends_report_them(when: object) -> None:
    assert _epoch(when) == 1_700_000_000.0
