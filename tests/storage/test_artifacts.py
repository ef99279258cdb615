"""The content-addressed artifact store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from storage import ArtifactStore, NotFoundError, StorageError
from storage.errors import CorruptArtifactError


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.rand(4, 1, 8, 8, generator=g),
        "idx": torch.arange(4, dtype=torch.int64),
        "ok": torch.tensor([True, False, True, True]),
        "img": torch.randint(0, 255, (4, 3), dtype=torch.uint8, generator=g),
    }


def test_round_trip_is_exact(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    rec = store.put(_tensors(), {"kind": "adversarial", "attack": {"eps": 0.1}})
    tensors, meta = store.get(rec.digest)
    for name, value in _tensors().items():
        assert tensors[name].dtype == value.dtype
        assert torch.equal(tensors[name], value)
    assert meta == {"kind": "adversarial", "attack": {"eps": 0.1}}
    assert rec.kind == "adversarial"
    assert rec.format == "safetensors"
    assert rec.uri == f"objects/{rec.digest[:2]}/{rec.digest[2:]}.safetensors"
    assert (tmp_path / rec.uri).stat().st_size == rec.bytes


def test_content_addressing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    a = store.put(_tensors(), {"k": 1})
    b = store.put(_tensors(), {"k": 1})
    c = store.put(_tensors(), {"k": 2})
    assert a.digest == b.digest != c.digest
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 2
    assert not [p for p in files if p.name.startswith(".tmp-")]
    assert sorted(store.iter_digests()) == sorted({a.digest, c.digest})


def test_corruption_is_detected(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    rec = store.put(_tensors(), {})
    path = store.path(rec.digest)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(CorruptArtifactError, match="advgrid artifacts verify"):
        store.get(rec.digest)
    assert [d for d, _ in store.verify()] == [rec.digest]


@pytest.mark.parametrize("digest", ["../../etc/passwd", "A" * 64, "ab" * 10, "g" * 64, ""])
def test_digests_that_could_name_a_path_are_rejected(tmp_path: Path, digest: str) -> None:
    with pytest.raises(StorageError, match="invalid artifact digest"):
        ArtifactStore(tmp_path).get(digest)


def test_missing_artifact(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="missing from the store"):
        ArtifactStore(tmp_path).get("0" * 64)


def test_unwritable_store_raises_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "objects"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match="cannot write artifact"):
        ArtifactStore(tmp_path).put(_tensors(), {})
