"""Content-addressed artifact store: safetensors files named by their SHA-256.

Layout: ``<root>/objects/ab/cdef….safetensors`` where ``abcdef…`` is the SHA-256 of the
file's bytes. A write goes to a temporary file in the target folder, is fsynced and renamed
into place (then the folder is fsynced), so a reader sees a whole file or none. A crash can
leave an orphan file, never a row pointing at nothing: rows are written after the file.
Every read re-hashes the bytes. No pickle anywhere: tensors are safetensors, metadata JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from storage.errors import CorruptArtifactError, NotFoundError, StorageError

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
SUFFIX = ".safetensors"


@dataclass(frozen=True)
class ArtifactRecord:
    """What the index knows about one stored artifact."""

    digest: str
    kind: str
    uri: str
    bytes: int
    format: str = "safetensors"
    meta: dict[str, Any] = field(default_factory=dict)


def check_digest(digest: str) -> str:
    """``digest`` if it is 64 lowercase hex characters; anything else could name a path."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise StorageError(
            f"invalid artifact digest {digest!r}: expected 64 lowercase hex characters (a SHA-256)"
        )
    return digest


class ArtifactStore:
    """Tensors in, digests out; digests in, verified tensors out."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def uri(self, digest: str) -> str:
        check_digest(digest)
        return f"objects/{digest[:2]}/{digest[2:]}{SUFFIX}"

    def path(self, digest: str) -> Path:
        return self.root / self.uri(digest)

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> ArtifactRecord:
        """Store ``tensors`` with JSON-able ``meta``; returns the record to index."""
        data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        blob = st_save(data, metadata={"advgrid": json.dumps(meta, sort_keys=True)})
        digest = hashlib.sha256(blob).hexdigest()
        target = self.path(digest)
        if not target.is_file():
            _atomic_write(target, blob)
        return ArtifactRecord(
            digest=digest,
            kind=str(meta.get("kind", "tensors")),
            uri=self.uri(digest),
            bytes=len(blob),
            meta=meta,
        )

    def read_bytes(self, digest: str) -> bytes:
        """The verified bytes of ``digest``."""
        path = self.path(digest)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"artifact {digest} is missing from the store ({path})") from None
        except OSError as exc:
            raise StorageError(f"cannot read artifact {path}: {exc}") from exc
        actual = hashlib.sha256(blob).hexdigest()
        if actual != digest:
            raise CorruptArtifactError(
                f"artifact {path} is corrupt: its bytes hash to {actual[:16]}…, not its name; "
                "run `advgrid artifacts verify` and re-run the cells that wrote it"
            )
        return blob

    def get(self, digest: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and metadata of ``digest``, after checking the hash."""
        blob = self.read_bytes(digest)
        tensors = st_load(blob)
        header_len = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8 : 8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get("advgrid", "{}"))
        return tensors, meta

    def iter_digests(self) -> Iterator[str]:
        objects = self.root / "objects"
        if not objects.is_dir():
            return
        for path in sorted(objects.glob(f"??/*{SUFFIX}")):
            digest = path.parent.name + path.name.removesuffix(SUFFIX)
            if _DIGEST.match(digest):
                yield digest

    def verify(self) -> list[tuple[str, str]]:
        """``(digest, problem)`` for every stored file that does not hash to its name."""
        problems = []
        for digest in self.iter_digests():
            try:
                self.read_bytes(digest)
            except StorageError as exc:
                problems.append((digest, str(exc)))
        return problems


def _atomic_write(target: Path, blob: bytes) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=SUFFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StorageError(f"cannot write artifact {target}: {exc.strerror or exc}") from exc
