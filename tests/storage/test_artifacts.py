"""The content-addressed artifact store."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
import torch

from storage import ArtifactStore, CorruptArtifactError, NotFoundError, StorageError


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.rand(4, 1, 8, 8, generator=g),
        "idx": torch.arange(4, dtype=torch.int64) * 10**12,
        "ok": torch.tensor([True, False, True, True]),
        "img": torch.randint(0, 256, (4, 3), dtype=torch.uint8, generator=g),
        "half": torch.rand(3, generator=g).to(torch.float16),
    }


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_round_trip_is_exact(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
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
    assert store.path(rec.digest) == tmp_path / rec.uri
    blob = (tmp_path / rec.uri).read_bytes()
    assert (len(blob), hashlib.sha256(blob).hexdigest()) == (rec.bytes, rec.digest)


def test_default_kind_and_empty_meta(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    rec = store.put({"w": torch.zeros(2)}, {})
    assert rec.kind == "tensors"
    assert store.get(rec.digest)[1] == {}


def test_content_addressing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    a = store.put(_tensors(), {"k": 1})
    path = store.path(a.digest)
    written = path.stat().st_mtime_ns
    b = store.put(_tensors(), {"k": 1})
    c = store.put(_tensors(), {"k": 2})
    d = store.put({**_tensors(), "x": _tensors()["x"] + 1e-7}, {"k": 1})
    assert a == b
    assert len({a.digest, c.digest, d.digest}) == 3
    assert path.stat().st_mtime_ns == written  # not rewritten
    assert len(_files(tmp_path)) == 3
    assert list(store.iter_digests()) == sorted({a.digest, c.digest, d.digest})
    assert store.exists(a.digest)
    assert not store.exists("0" * 64)


def test_tensors_are_made_contiguous_and_untied(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    rec = store.put({"t": base.T, "a": base, "b": base, "view": base[1]}, {})
    got, _ = store.get(rec.digest)
    assert torch.equal(got["t"], base.T)
    assert torch.equal(got["a"], base)
    assert torch.equal(got["b"], base)
    assert torch.equal(got["view"], base[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_are_moved_to_the_cpu(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    on_cpu = store.put(_tensors(), {})
    on_gpu = store.put({n: t.cuda() for n, t in _tensors().items()}, {})
    assert on_gpu.digest == on_cpu.digest
    assert store.get(on_gpu.digest)[0]["x"].device.type == "cpu"


def test_no_temporary_files_are_left_and_files_are_shareable(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    for i in range(3):
        store.put({"x": torch.full((2,), float(i))}, {"i": i})
    files = _files(tmp_path)
    assert len(files) == 3
    assert [p for p in files if p.name.startswith(".tmp-")] == []
    mask = os.umask(0o022)
    os.umask(mask)
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o666 & ~mask}


def test_corruption_is_detected_on_get_and_by_verify(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    good = store.put({"a": torch.ones(3)}, {})
    rec = store.put(_tensors(), {})
    assert store.verify() == []
    path = store.path(rec.digest)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(CorruptArtifactError, match="advgrid artifacts verify") as info:
        store.get(rec.digest)
    assert str(path) in str(info.value)
    problems = store.verify()
    assert [d for d, _ in problems] == [rec.digest]
    assert "corrupt" in problems[0][1]
    assert store.get(good.digest)[0]["a"].sum() == 3


def test_a_truncated_file_is_rewritten_by_put(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    rec = store.put(_tensors(), {})
    store.path(rec.digest).write_bytes(b"trunc")
    assert store.put(_tensors(), {}) == rec
    assert store.verify() == []


@pytest.mark.parametrize(
    "digest", ["../../etc/passwd", "A" * 64, "ab" * 10, "g" * 64, "", "a" * 63 + "\n", "a" * 65]
)
def test_digests_that_could_name_a_path_are_rejected(tmp_path: Path, digest: str) -> None:
    store = ArtifactStore(tmp_path)
    for call in (store.get, store.path, store.exists, store.read_bytes):
        with pytest.raises(StorageError, match="invalid artifact digest"):
            call(digest)


def test_missing_artifact(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="missing from the store"):
        ArtifactStore(tmp_path).get("0" * 64)


def test_stray_files_are_not_digests(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    rec = store.put({"a": torch.ones(1)}, {})
    folder = store.path(rec.digest).parent
    (folder / ".tmp-abc.safetensors").write_bytes(b"partial")
    (folder / "notes.txt").write_text("hi")
    (tmp_path / "objects" / "zz").mkdir()
    (tmp_path / "objects" / "zz" / ("0" * 62 + ".safetensors")).write_bytes(b"x")
    assert list(store.iter_digests()) == [rec.digest]


def test_metadata_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="metadata must be JSON-serializable"):
        ArtifactStore(tmp_path).put({"a": torch.ones(1)}, {"t": torch.ones(1)})
    assert _files(tmp_path) == []


def test_unwritable_store_raises_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "objects"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match="cannot write artifact"):
        ArtifactStore(tmp_path).put(_tensors(), {})
