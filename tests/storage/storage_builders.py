"""Small builders shared by the storage tests."""

from __future__ import annotations

import hashlib

from storage import ArtifactRecord, NewCell


def k(name: str) -> str:
    """A valid 64-hex cell key derived from a readable name."""
    return hashlib.sha256(name.encode()).hexdigest()


def cell(name: str, kind: str = "attack", deps: list[str] | None = None) -> NewCell:
    """A cell keyed ``k(name)`` depending on the cells named in ``deps``."""
    return NewCell(
        key=k(name),
        kind=kind,
        spec_json=f'{{"name": "{name}"}}',
        depends_on=[k(d) for d in deps or []],
    )


def record(name: str, kind: str = "checkpoint", **meta: object) -> ArtifactRecord:
    """An artifact record with a valid digest derived from ``name``."""
    digest = hashlib.sha256(b"artifact:" + name.encode()).hexdigest()
    uri = f"objects/{digest[:2]}/{digest[2:]}.safetensors"
    return ArtifactRecord(digest, kind, uri, 123, "safetensors", {"kind": kind, **meta})
