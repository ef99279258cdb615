"""The content-addressed artifact store: one contract, run on every way a store is opened.

``raw`` (``tests/storage/conftest.py``) is a store on a folder, on a ``file://`` URL, on the
fsspec backend over the local disk (its rename path) and on ``memory://`` (its object-store
path), with its files reachable past the store. ``disk`` is the first three only.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

import pytest
import torch

from storage import CorruptArtifactError, NotFoundError, StorageError
from tests.storage.conftest import RawStore


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.rand(4, 1, 8, 8, generator=g),
        "idx": torch.arange(4, dtype=torch.int64) * 10**12,
        "ok": torch.tensor([True, False, True, True]),
        "img": torch.randint(0, 256, (4, 3), dtype=torch.uint8, generator=g),
        "half": torch.rand(3, generator=g).to(torch.float16),
    }


def test_round_trip_is_exact(raw: RawStore) -> None:
    store = raw.store
    meta = {"kind": "adversarial", "attack": {"eps": 0.1, "steps": [1, 2]}, "seed": 0}
    rec = store.put(_tensors(), meta)
    tensors, got = store.get(rec.digest)
    assert sorted(tensors) == sorted(_tensors())
    for name, value in _tensors().items():
        assert tensors[name].dtype == value.dtype
        assert tensors[name].shape == value.shape
        assert torch.equal(tensors[name], value)
    assert got == meta
    assert rec.meta == meta
    assert (rec.kind, rec.format) == ("adversarial", "safetensors")
    assert rec.uri == f"objects/{rec.digest[:2]}/{rec.digest[2:]}.safetensors"
    assert raw.files() == [rec.uri]
    blob = raw.read(rec.uri)
    assert (len(blob), hashlib.sha256(blob).hexdigest()) == (rec.bytes, rec.digest)
    assert store.read_bytes(rec.digest) == blob
    assert store.size(rec.digest) == rec.bytes
    assert store.location(rec.digest).endswith(rec.uri)


def test_default_kind_and_empty_meta(raw: RawStore) -> None:
    rec = raw.store.put({"w": torch.zeros(2)}, {})
    assert rec.kind == "tensors"
    assert raw.store.get(rec.digest)[1] == {}


def test_content_addressing(raw: RawStore) -> None:
    store = raw.store
    a = store.put(_tensors(), {"k": 1})
    # same length, other bytes: a file put finds already there is not written again
    marker = b"\0" * a.bytes
    raw.write(a.uri, marker)
    b = store.put(_tensors(), {"k": 1})
    c = store.put(_tensors(), {"k": 2})
    d = store.put({**_tensors(), "x": _tensors()["x"] + 1e-7}, {"k": 1})
    assert a == b
    assert raw.read(a.uri) == marker
    assert len({a.digest, c.digest, d.digest}) == 3
    assert len(raw.files()) == 3
    assert list(store.iter_digests()) == sorted({a.digest, c.digest, d.digest})
    assert store.exists(a.digest)
    assert not store.exists("0" * 64)


def test_tensors_are_made_contiguous_and_untied(raw: RawStore) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    rec = raw.store.put({"t": base.T, "a": base, "b": base, "view": base[1]}, {})
    got, _ = raw.store.get(rec.digest)
    assert torch.equal(got["t"], base.T)
    assert torch.equal(got["a"], base)
    assert torch.equal(got["b"], base)
    assert torch.equal(got["view"], base[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_are_moved_to_the_cpu(raw: RawStore) -> None:
    on_cpu = raw.store.put(_tensors(), {})
    on_gpu = raw.store.put({n: t.cuda() for n, t in _tensors().items()}, {})
    assert on_gpu.digest == on_cpu.digest
    assert raw.store.get(on_gpu.digest)[0]["x"].device.type == "cpu"


def test_no_temporary_files_are_left(raw: RawStore) -> None:
    records = [raw.store.put({"x": torch.full((2,), float(i))}, {"i": i}) for i in range(3)]
    assert raw.files() == sorted(r.uri for r in records)


def test_files_are_shareable(disk: RawStore) -> None:
    for i in range(3):
        disk.store.put({"x": torch.full((2,), float(i))}, {"i": i})
    files = [Path(disk.full(rel)) for rel in disk.files()]
    assert len(files) == 3
    mask = os.umask(0o022)
    os.umask(mask)
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o666 & ~mask}


def test_corruption_is_detected_on_get_and_by_verify(raw: RawStore) -> None:
    store = raw.store
    good = store.put({"a": torch.ones(3)}, {})
    rec = store.put(_tensors(), {})
    assert store.verify() == []
    blob = bytearray(raw.read(rec.uri))
    blob[-1] ^= 0xFF
    raw.write(rec.uri, bytes(blob))
    with pytest.raises(CorruptArtifactError, match="advgrid artifacts verify") as info:
        store.get(rec.digest)
    assert store.location(rec.digest) in str(info.value)
    problems = store.verify()
    assert [d for d, _ in problems] == [rec.digest]
    assert "corrupt" in problems[0][1]
    assert store.get(good.digest)[0]["a"].sum() == 3


def test_a_truncated_file_is_rewritten_by_put(raw: RawStore) -> None:
    rec = raw.store.put(_tensors(), {})
    raw.write(rec.uri, b"trunc")
    assert raw.store.put(_tensors(), {}) == rec
    assert raw.store.verify() == []


def test_put_bytes(raw: RawStore) -> None:
    blob = raw.store.read_bytes(raw.store.put(_tensors(), {}).digest)
    digest = hashlib.sha256(blob).hexdigest()
    raw.store.remove(digest)
    assert raw.store.put_bytes(digest, blob) is True
    assert raw.store.put_bytes(digest, blob) is False
    assert raw.store.get(digest)[0].keys() == _tensors().keys()
    with pytest.raises(CorruptArtifactError, match="refusing to store"):
        raw.store.put_bytes("0" * 64, blob)
    assert raw.files() == [raw.store.uri(digest)]


def test_remove_and_age(raw: RawStore) -> None:
    rec = raw.store.put(_tensors(), {})
    age = raw.store.age_s(rec.digest)
    assert age is not None
    assert 0 <= age < 600
    assert raw.store.remove(rec.digest) is True
    assert raw.store.remove(rec.digest) is False
    assert raw.store.age_s(rec.digest) is None
    assert raw.store.size(rec.digest) is None
    assert list(raw.store.iter_digests()) == []


def test_age_is_the_modification_time(disk: RawStore) -> None:
    rec = disk.store.put(_tensors(), {})
    past = time.time() - 7200
    os.utime(disk.full(rec.uri), (past, past))
    age = disk.store.age_s(rec.digest)
    assert age is not None
    assert 7200 <= age < 7800


@pytest.mark.parametrize(
    "digest", ["../../etc/passwd", "A" * 64, "ab" * 10, "g" * 64, "", "a" * 63 + "\n", "a" * 65]
)
def test_digests_that_could_name_a_path_are_rejected(raw: RawStore, digest: str) -> None:
    s = raw.store
    for call in (s.get, s.path, s.exists, s.read_bytes, s.size, s.remove, s.age_s, s.location):
        with pytest.raises(StorageError, match="invalid artifact digest"):
            call(digest)
    with pytest.raises(StorageError, match="invalid artifact digest"):
        s.put_bytes(digest, b"")


def test_missing_artifact(raw: RawStore) -> None:
    with pytest.raises(NotFoundError, match="missing from the store"):
        raw.store.get("0" * 64)


def test_stray_files_are_not_digests(raw: RawStore) -> None:
    rec = raw.store.put({"a": torch.ones(1)}, {})
    folder = rec.uri.rsplit("/", 1)[0]
    raw.write(f"{folder}/.tmp-abc.safetensors", b"partial")
    raw.write(f"{folder}/notes.txt", b"hi")
    raw.write(f"objects/zz/{'0' * 62}.safetensors", b"x")
    raw.write(f"objects/{rec.digest[:2]}/sub/{rec.digest[2:]}.safetensors", b"x")
    raw.write(f"{rec.digest[2:]}.safetensors", b"x")
    assert list(raw.store.iter_digests()) == [rec.digest]


def test_metadata_must_be_json(raw: RawStore) -> None:
    with pytest.raises(StorageError, match="metadata must be JSON-serializable"):
        raw.store.put({"a": torch.ones(1)}, {"t": torch.ones(1)})
    assert raw.files() == []


def test_unwritable_store_raises_a_storage_error(disk: RawStore) -> None:
    Path(disk.root).mkdir()
    (Path(disk.root) / "objects").write_text("not a folder")
    with pytest.raises(StorageError, match="cannot write artifact"):
        disk.store.put(_tensors(), {})


def test_only_a_folder_gives_local_paths(raw: RawStore) -> None:
    rel = raw.store.uri("0" * 64)
    if raw.kind in ("path", "file_url"):  # a file:// URL is the folder it names
        assert raw.store.root == Path(raw.root)
        assert raw.store.path("0" * 64) == Path(raw.root) / rel
        assert raw.store.location("0" * 64) == str(Path(raw.root) / rel)
        return
    with pytest.raises(StorageError, match="not a local folder"):
        raw.store.path("0" * 64)
